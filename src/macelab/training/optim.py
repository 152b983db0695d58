"""Optimiser, learning-rate schedule and stage two, as MACE trains.

mace-torch (and the MACE paper) train with Adam + AMSGrad, weight decay only on some
parameter groups (the interactions' output linears and the product basis), a
ReduceLROnPlateau or exponential schedule, gradient clipping at norm 10, and a "stage two"
(called SWA in mace-torch) that from a given epoch raises the energy weight of the loss and
lowers the learning rate.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class OptimizerConfig:
    """Adam(W) settings and which parameters get weight decay.

    ``decay_patterns`` are fnmatch patterns on parameter names (``model.named_parameters``);
    a parameter whose name matches one of them gets ``weight_decay``, all others none.
    The defaults follow mace-torch: the interactions' output linear and the product basis
    (contraction and update linear), not the element-dependent self-connection.
    """

    name: str = "adam"
    lr: float = 0.01
    amsgrad: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-7
    decay_patterns: list[str] = field(
        default_factory=lambda: [
            "interactions.*.linear.*",
            "products.*.contraction.*",
            "products.*.update.linear.*",
        ]
    )


@dataclass
class SchedulerConfig:
    """``plateau`` (ReduceLROnPlateau on the validation loss) or ``exponential`` (per epoch)."""

    name: str = "plateau"
    factor: float = 0.8
    patience: int = 50
    gamma: float = 0.9993
    monitor: str = "val/loss"


@dataclass
class StageTwoConfig:
    """From epoch ``start_epoch`` on: loss weights ``energy_weight``/``forces_weight``/
    ``stress_weight`` and learning rate ``lr`` (None: stage two off).

    ``start_fraction`` starts stage two instead at the first epoch that begins after this
    fraction of the run's budget is spent: of ``trainer.max_epochs`` or of
    ``trainer.max_time``, whichever is further along. mace-torch starts its stage two at 75%
    of the epochs by default; with a wall-clock budget the number of epochs is not known in
    advance, so the fraction is the way to say "the last quarter". The epoch it started is
    saved in checkpoints, so a resumed run stays in stage two.
    """

    start_epoch: int | None = None
    start_fraction: float | None = None
    energy_weight: float = 1000.0
    forces_weight: float = 100.0
    stress_weight: float = 10.0
    lr: float = 1e-3


def parameter_groups(model: torch.nn.Module, config: OptimizerConfig) -> list[dict[str, Any]]:
    """Split trainable parameters into a weight-decay group and a no-decay group."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        matches = any(fnmatch.fnmatchcase(name, pattern) for pattern in config.decay_patterns)
        (decay if matches else no_decay).append(parameter)
    groups = [{"name": "decay", "params": decay, "weight_decay": config.weight_decay}]
    groups.append({"name": "no_decay", "params": no_decay, "weight_decay": 0.0})
    return [group for group in groups if group["params"]]


def build_optimizer(model: torch.nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config)
    kwargs = {"lr": config.lr, "betas": tuple(config.betas), "amsgrad": config.amsgrad}
    if config.name == "adam":
        return torch.optim.Adam(groups, **kwargs)
    if config.name == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    if config.name == "sgd":  # plain SGD: trajectories that do not amplify rounding (tests)
        return torch.optim.SGD(groups, lr=config.lr)
    raise ValueError(f"unknown optimizer {config.name!r}; use 'adam', 'adamw' or 'sgd'")


def build_scheduler(optimizer: torch.optim.Optimizer, config: SchedulerConfig) -> dict[str, Any]:
    """A Lightning ``lr_scheduler`` dict, stepped once per epoch."""
    if config.name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.factor, patience=config.patience
        )
        return {"scheduler": scheduler, "interval": "epoch", "monitor": config.monitor}
    if config.name == "exponential":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma)
        return {"scheduler": scheduler, "interval": "epoch"}
    raise ValueError(f"unknown scheduler {config.name!r}; use 'plateau' or 'exponential'")
