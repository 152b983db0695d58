"""The Lightning precision plugin of a per-stage policy.

Lightning's ``bf16-mixed``/``16-mixed`` put the whole step under one autocast; a policy
instead sets each stage's dtype (:mod:`macelab.precision.policy`). The plugin therefore
opens no global autocast: when Lightning hands it the module (``convert_module``) it
applies the policy to the MACE inside, and everything else is Lightning's own mixed
precision: with any fp16 stage, dynamic loss scaling by ``torch.amp.GradScaler``, which
skips an optimiser step whose gradients are not finite; the plugin counts those steps
(``skipped_steps``, logged by the training module as ``train/skipped_steps``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from macelab.precision.policy import Policy, apply_policy


class PolicyPrecision(MixedPrecision):
    """Mixed precision by stage: fp32 master weights, per-stage compute dtypes.

    Args:
        policy: the parsed policy.
        device: ``cuda`` or ``cpu`` (where loss scaling runs).
    """

    def __init__(self, policy: Policy, device: str = "cuda") -> None:
        fp16 = policy.uses(torch.float16)
        scaler = torch.amp.GradScaler(device) if fp16 else None
        super().__init__("16-mixed" if fp16 else "bf16-mixed", device, scaler)
        self.policy = policy
        self.skipped_steps = 0
        self.resolved: dict[str, Any] = {}

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        # fp32 master weights (an fp64 checkpoint evaluated under a policy is cast down)
        module = module.to(torch.float32)
        model = getattr(module, "model", module)
        self.resolved = apply_policy(model, self.policy)
        return module

    def forward_context(self) -> AbstractContextManager:
        return nullcontext()  # the stages set their own dtypes

    def optimizer_step(self, optimizer, model, closure, **kwargs: Any) -> Any:
        if self.scaler is None:
            return super().optimizer_step(optimizer, model, closure, **kwargs)
        before = self.scaler.get_scale()
        result = super().optimizer_step(optimizer, model, closure, **kwargs)
        if self.scaler.get_scale() < before:  # GradScaler lowers the scale when it skips
            self.skipped_steps += 1
        return result
