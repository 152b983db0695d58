"""Exponential moving average (EMA) of the model weights.

MACE evaluates and saves the EMA of its weights (mace-torch: ``--ema --ema_decay 0.99``,
via torch-ema with ``use_num_updates``). The effective decay after ``n`` updates is
``min(decay, (1 + n) / (10 + n))`` so that early averages are not dominated by the random
initial weights. The shadow weights are kept in float32 or higher whatever the training
precision, and saved in checkpoints so that a resumed run continues the same average.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class ExponentialMovingAverage:
    """EMA of a module's floating-point parameters."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.99, use_num_updates: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.use_num_updates = use_num_updates
        self.num_updates = 0
        self.shadow = {
            name: p.detach().clone().to(self._shadow_dtype(p))
            for name, p in module.named_parameters()
            if p.requires_grad
        }

    @staticmethod
    def _shadow_dtype(p: torch.Tensor) -> torch.dtype:
        return torch.float64 if p.dtype == torch.float64 else torch.float32

    def current_decay(self) -> float:
        if not self.use_num_updates:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Move the average towards the module's current weights."""
        self.num_updates += 1
        decay = self.current_decay()
        for name, p in module.named_parameters():
            if name in self.shadow:
                shadow = self.shadow[name]
                dtype = self._shadow_dtype(p)
                if shadow.device != p.device or shadow.dtype != dtype:
                    # Follow the parameters (e.g. a module cast to float64 after init).
                    shadow = self.shadow[name] = shadow.to(device=p.device, dtype=dtype)
                shadow.lerp_(p.detach().to(shadow.dtype), 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        """Overwrite the module's weights with the average."""
        for name, p in module.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name].to(device=p.device, dtype=p.dtype))

    @contextmanager
    def average_parameters(self, module: torch.nn.Module) -> Iterator[None]:
        """Use the averaged weights inside the ``with`` block, then restore the originals."""
        backup = {name: p.detach().clone() for name, p in module.named_parameters()}
        self.copy_to(module)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in module.named_parameters():
                    p.copy_(backup[name])

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "use_num_updates": self.use_num_updates,
            "num_updates": self.num_updates,
            "shadow": {name: t.detach().cpu().clone() for name, t in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.use_num_updates = state["use_num_updates"]
        self.num_updates = state["num_updates"]
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks parameters {sorted(missing)[:5]}")
        for name in self.shadow:
            self.shadow[name] = state["shadow"][name].to(self.shadow[name].device)
