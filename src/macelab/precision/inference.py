"""Any precision name for inference outside Lightning (calculator, report, scripts).

``model, context = for_inference(model, "policy_safe", "cpu")`` gives a copy of the model
in the precision's weight dtype (float64 for ``64``, else float32), with a policy's stage
dtypes applied, and a factory of the context every call must run in (autocast for the
mixed precisions, TensorFloat-32 matmuls for ``tf32``, nothing otherwise). CPU autocast
supports bf16 and fp16, so every name runs on the CPU too.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch

from macelab.precision import load_precision, parameter_dtype, policy_of
from macelab.precision.policy import apply_policy

AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def for_inference(
    model: torch.nn.Module, precision: str, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Callable[[], contextlib.AbstractContextManager]]:
    """A copy of ``model`` on ``device`` in ``precision``, and its call context factory."""
    cfg = load_precision(str(precision))
    name = str(cfg.get("name"))
    device = torch.device(device)
    dtype = parameter_dtype(cfg)
    copied = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    policy = policy_of(cfg)
    if policy is not None:
        apply_policy(copied, policy)
    matmul = str(cfg.get("matmul_precision") or "highest")
    autocast = AUTOCAST.get(name)

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(matmul)
        try:
            if autocast is None:
                yield
            else:
                # no weight-cast cache: it must not outlive a CUDA-graph capture
                with torch.autocast(device.type, dtype=autocast, cache_enabled=False):
                    yield
        finally:
            torch.set_float32_matmul_precision(previous)

    return copied, context
