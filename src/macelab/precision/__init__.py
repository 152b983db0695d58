"""Numerical precision: the names users pick (``precision=...``) and what they mean.

=============  =========================  ==========================================
name           Lightning ``precision``    meaning
=============  =========================  ==========================================
``64``         ``64-true``                float64 weights and compute (the reference)
``32``         ``32-true``                float32, matmuls in full fp32
``tf32``       ``32-true``                float32 storage, TensorFloat-32 matmuls
``16-mixed``   ``16-mixed``               fp16 autocast, fp32 weights, loss scaling
``bf16-mixed`` ``bf16-mixed``             bf16 autocast, fp32 weights
=============  =========================  ==========================================

A precision config (``conf/precision/*.yaml``) has ``name``, ``trainer`` (Lightning's
precision string) and ``matmul_precision`` (``torch.set_float32_matmul_precision``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from macelab.errors import ConfigError

TRAINER_PRECISION = {
    "64": "64-true",
    "32": "32-true",
    "tf32": "32-true",
    "16-mixed": "16-mixed",
    "bf16-mixed": "bf16-mixed",
}
MATMUL_PRECISION = {"tf32": "high"}


def precision_names() -> list[str]:
    return list(TRAINER_PRECISION)


def apply_precision(cfg: Any) -> str:
    """Set process-wide matmul precision for ``cfg`` and return Lightning's precision string."""
    name = str(cfg.get("name") if hasattr(cfg, "get") else cfg)
    if name not in TRAINER_PRECISION:
        raise ConfigError(
            f"unknown precision {name!r}; choose one of {', '.join(precision_names())} "
            "(e.g. precision=bf16-mixed)."
        )
    matmul = (cfg.get("matmul_precision") if hasattr(cfg, "get") else None) or MATMUL_PRECISION.get(
        name, "highest"
    )
    torch.set_float32_matmul_precision(matmul)
    trainer = cfg.get("trainer") if hasattr(cfg, "get") else None
    return str(trainer or TRAINER_PRECISION[name])


def parameter_dtype(cfg: Any) -> torch.dtype:
    """The dtype the model's parameters are stored in: float64 for ``64``, else float32."""
    name = str(cfg.get("name") if hasattr(cfg, "get") else cfg)
    trainer = str(cfg.get("trainer") or "") if hasattr(cfg, "get") else ""
    return torch.float64 if name == "64" or trainer.startswith("64") else torch.float32


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create tensors and modules in ``dtype`` inside the block (e3nn uses the default)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
