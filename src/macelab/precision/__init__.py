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

Per-stage policies (``conf/precision/policy_*.yaml``) add a ``policy`` mapping (schema in
:mod:`macelab.precision.policy`, design in docs/precision.md); they train with fp32 weights
through :class:`macelab.precision.plugin.PolicyPrecision`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from macelab.config import CONFIG_DIR
from macelab.dtypes import default_dtype
from macelab.errors import ConfigError
from macelab.precision.policy import Policy

__all__ = ["default_dtype"]  # re-exported: where most callers import it from

TRAINER_PRECISION = {
    "64": "64-true",
    "32": "32-true",
    "tf32": "32-true",
    "16-mixed": "16-mixed",
    "bf16-mixed": "bf16-mixed",
}
MATMUL_PRECISION = {"tf32": "high"}


def policy_names() -> list[str]:
    """The policies shipped in conf/precision (``policy_*.yaml``)."""

    return sorted(p.stem for p in (Path(CONFIG_DIR) / "precision").glob("policy_*.yaml"))


def precision_names() -> list[str]:
    """Every precision name: the five named precisions, then the shipped policies."""
    return [*TRAINER_PRECISION, *policy_names()]


def load_precision(name: str | Any) -> Any:
    """The precision config called ``name`` (a mapping) from conf/precision; a mapping is
    returned as is. ConfigError names the choices."""
    if hasattr(name, "get"):
        return name
    from omegaconf import OmegaConf

    path = Path(CONFIG_DIR) / "precision" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown precision {name!r}; choose one of {', '.join(precision_names())}."
        )
    return OmegaConf.load(path)


def policy_of(cfg: Any):
    """The :class:`~macelab.precision.policy.Policy` of a precision config, or None."""
    from omegaconf import DictConfig, OmegaConf

    policy = cfg.get("policy") if hasattr(cfg, "get") else None
    if policy is None:
        return None
    if isinstance(policy, DictConfig):
        policy = OmegaConf.to_container(policy, resolve=True)
    return Policy.from_config(str(cfg.get("name")), policy)


def apply_precision(cfg: Any, device: str | None = None) -> Any:
    """Set process-wide matmul precision for ``cfg`` and return what the Trainer takes:
    Lightning's precision string, or a :class:`~macelab.precision.plugin.PolicyPrecision`
    for a per-stage policy (``device``: where loss scaling runs, default: cuda if present).
    """
    name = str(cfg.get("name") if hasattr(cfg, "get") else cfg)
    policy = policy_of(cfg)
    if policy is not None:
        from macelab.precision.plugin import PolicyPrecision

        torch.set_float32_matmul_precision(str(cfg.get("matmul_precision") or "highest"))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return PolicyPrecision(policy, device)
    if name not in TRAINER_PRECISION:
        raise ConfigError(
            f"unknown precision {name!r}; choose one of {', '.join(precision_names())} "
            "(e.g. precision=bf16-mixed)."
        )
    matmul = (cfg.get("matmul_precision") if hasattr(cfg, "get") else None) or MATMUL_PRECISION.get(
        name, "highest"
    )
    torch.set_float32_matmul_precision(matmul)
    trainer = str((cfg.get("trainer") if hasattr(cfg, "get") else None) or TRAINER_PRECISION[name])
    if trainer == "16-mixed" and device == "cpu":
        # Lightning turns 16-mixed on the CPU into bf16-mixed; CPU autocast has fp16, so run
        # what was asked: fp16 autocast with loss scaling.
        from lightning.pytorch.plugins.precision import MixedPrecision

        return MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))
    return trainer


def trainer_precision_kwargs(precision: Any) -> dict[str, Any]:
    """What ``apply_precision`` returned, as Trainer keyword arguments."""
    if isinstance(precision, str):
        return {"precision": precision}
    return {"plugins": [precision]}


def parameter_dtype(cfg: Any) -> torch.dtype:
    """The dtype the model's parameters are stored in: float64 for ``64``, else float32."""
    name = str(cfg.get("name") if hasattr(cfg, "get") else cfg)
    trainer = str(cfg.get("trainer") or "") if hasattr(cfg, "get") else ""
    return torch.float64 if name == "64" or trainer.startswith("64") else torch.float32
