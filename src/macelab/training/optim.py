"""Optimiser, learning-rate schedule and stage two, as MACE trains.

mace-torch (and the MACE paper) train with Adam + AMSGrad, weight decay only on some
parameter groups (the interactions' output linears and the product basis), a
ReduceLROnPlateau or exponential schedule, gradient clipping at norm 10, and a "stage two"
(called SWA in mace-torch) that from a given epoch raises the energy weight of the loss and
lowers the learning rate.
"""

from __future__ import annotations

import fnmatch
import math
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
    """``plateau`` (ReduceLROnPlateau on the validation loss), ``exponential`` (per epoch) or
    ``cosine`` (:class:`BudgetCosine`: linear warm-up over ``warmup_epochs``, then a cosine
    from the learning rate down to ``final_factor`` times it, over the run's budget up to
    ``end_fraction``; null: up to stage two's start fraction, or the whole budget)."""

    name: str = "plateau"
    factor: float = 0.8
    patience: int = 50
    gamma: float = 0.9993
    monitor: str = "val/loss"
    warmup_epochs: int = 0
    final_factor: float = 0.01
    end_fraction: float | None = None


class BudgetCosine:
    """A learning rate that follows the fraction of the run's budget spent (epochs of
    ``max_epochs`` or wall time of ``max_time``, :meth:`MACELightningModule.budget_fraction`),
    so that a wall-clock-budgeted run anneals to its end whatever its speed:

        lr(f) = lr_0 · w(e) · (c + (1 - c) · ½ (1 + cos(π · min(f / f_end, 1))))

    with warm-up ``w(e) = min(1, (e + 1) / (warmup_epochs + 1))`` in epochs ``e`` and
    ``c = final_factor``. It is stepped once per epoch with the fraction at the start of the
    next epoch; its state is the base rates and the last fraction and epoch, so a resumed
    run continues the same curve.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_epochs: int = 0,
        final_factor: float = 0.01,
        end_fraction: float = 1.0,
    ) -> None:
        if not 0.0 < end_fraction <= 1.0:
            raise ValueError(f"scheduler.end_fraction must be in (0, 1], got {end_fraction}")
        self.optimizer = optimizer
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.warmup_epochs = warmup_epochs
        self.final_factor = final_factor
        self.end_fraction = end_fraction
        self.fraction, self.epoch = 0.0, 0
        self._apply()

    def factor(self, fraction: float, epoch: int) -> float:
        """The multiplier of the base learning rate at this budget fraction and epoch."""
        warmup = min(1.0, (epoch + 1) / (self.warmup_epochs + 1))
        progress = min(max(fraction, 0.0) / self.end_fraction, 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return warmup * (self.final_factor + (1.0 - self.final_factor) * cosine)

    def step(self, fraction: float, epoch: int) -> None:
        """Set the rates of the epoch ``epoch``, which starts at budget ``fraction``."""
        self.fraction, self.epoch = fraction, epoch
        self._apply()

    def _apply(self) -> None:
        scale = self.factor(self.fraction, self.epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * scale

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "fraction": self.fraction, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        self.step(float(state["fraction"]), int(state["epoch"]))


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

    ``energy_per_atom`` sets the loss's energy term for stage two (None: as in stage one).
    mace-torch's stage-two weights (energy 1000, forces 100) are for per-atom energies; on
    whole-structure energies (the paper's Eq. 15, ``loss.energy_per_atom=false``) the same
    1000 is N^2 times stronger (225x for AcAc's 15 atoms), which wrecked the forces of the
    first AcAc reproduction run (docs/results.md).
    """

    start_epoch: int | None = None
    start_fraction: float | None = None
    energy_weight: float = 1000.0
    forces_weight: float = 100.0
    stress_weight: float = 10.0
    lr: float = 1e-3
    energy_per_atom: bool | None = None


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


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    config: SchedulerConfig,
    stage_two_fraction: float | None = None,
) -> dict[str, Any]:
    """A Lightning ``lr_scheduler`` dict, stepped once per epoch. ``stage_two_fraction``
    (stage two's ``start_fraction``) is where ``cosine`` ends unless ``end_fraction`` says."""
    if config.name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.factor, patience=config.patience
        )
        return {"scheduler": scheduler, "interval": "epoch", "monitor": config.monitor}
    if config.name == "exponential":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma)
        return {"scheduler": scheduler, "interval": "epoch"}
    if config.name == "cosine":
        end = config.end_fraction or stage_two_fraction or 1.0
        scheduler = BudgetCosine(optimizer, config.warmup_epochs, config.final_factor, end)
        return {"scheduler": scheduler, "interval": "epoch"}
    raise ValueError(f"unknown scheduler {config.name!r}; use 'plateau', 'exponential' or 'cosine'")
