"""Data-parallel scaling: the global batch size and the learning-rate rule, made explicit.

Under DDP every rank trains on ``data.batch_size`` structures per step, so one optimiser step
sees ``data.batch_size x world size`` structures (the global batch). How the learning rate
follows is a choice, written in the config as ``training.optimizer.lr_scaling``:

- ``none``: the configured ``lr`` as it is (the default: runs on 1 and N devices use the same
  learning rate and differ only in their batch),
- ``linear``: ``lr x world_size`` (Goyal et al. 2017, for SGD-like large-batch training),
- ``sqrt``: ``lr x sqrt(world_size)`` (the usual rule for Adam).

The reference is one device: ``training.optimizer.lr`` is the learning rate of a run with
batch ``data.batch_size`` on one device. The stage-two learning rate follows the same rule.
The effective values go into the checkpoint's hyper-parameters, the loggers and
``run_info.json``.

On CPUs (``trainer=ddp trainer.accelerator=cpu``) every rank is a process of this machine:
more of them than it has cores only makes them wait for each other, so
:func:`warn_if_oversubscribed` says so before the ranks start.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from typing import Any

from macelab.errors import ConfigError

log = logging.getLogger(__name__)

LR_SCALING_EXPONENTS = {"none": 0.0, "linear": 1.0, "sqrt": 0.5}


def lr_factor(rule: str, world_size: int) -> float:
    """The factor the learning rate is multiplied by on ``world_size`` ranks."""
    if rule not in LR_SCALING_EXPONENTS:
        raise ConfigError(
            f"training.optimizer.lr_scaling={rule!r} is not a learning-rate scaling rule; use "
            f"one of {', '.join(LR_SCALING_EXPONENTS)} (the factor applied to "
            "training.optimizer.lr on N devices is 1, N or sqrt(N))."
        )
    return float(world_size) ** LR_SCALING_EXPONENTS[rule]


def scale_training(
    training: dict[str, Any], world_size: int, batch_size: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training settings with the effective learning rates, and a record of the scaling.

    Args:
        training: ``cfg.training`` as a plain dict (it is not modified).
        world_size: the number of DDP ranks (devices x nodes).
        batch_size: structures per rank and step (``data.batch_size``).

    Returns:
        ``(training, record)``: ``training`` without the ``lr_scaling`` key and with the
        scaled ``optimizer.lr`` and ``stage_two.lr``; ``record`` holds ``world_size``,
        ``batch_size_per_rank``, ``global_batch_size``, ``lr_scaling``, ``lr_factor``,
        ``lr`` and ``stage_two_lr`` (the effective values).
    """
    training = copy.deepcopy(training)
    optimizer = training.setdefault("optimizer", {})
    rule = str(optimizer.pop("lr_scaling", "none"))
    factor = lr_factor(rule, world_size)
    if "lr" in optimizer:
        optimizer["lr"] = float(optimizer["lr"]) * factor
    stage_two = training.get("stage_two") or {}
    if stage_two.get("lr") is not None:
        stage_two["lr"] = float(stage_two["lr"]) * factor
    record = {
        "world_size": int(world_size),
        "batch_size_per_rank": int(batch_size),
        "global_batch_size": int(batch_size) * int(world_size),
        "lr_scaling": rule,
        "lr_factor": factor,
        "lr": optimizer.get("lr"),
        "stage_two_lr": stage_two.get("lr"),
    }
    return training, record


def silence_synced_metric_warnings() -> None:
    """Hide Lightning's advice to log epoch-level values with ``sync_dist=True``.

    macelab's epoch-level values are already the same on every rank: the metrics are
    torchmetrics states summed over ranks before they are logged, and the learning rate is
    identical everywhere; averaging them again would only add all-reduces.
    """
    warnings.filterwarnings(
        "ignore", message=r".*sync_dist=True.*when logging on epoch level in distributed"
    )


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def warn_if_oversubscribed(trainer: Any) -> str | None:
    """Warn (and return the message) if DDP runs more CPU processes here than there are cores.

    Only DDP on the CPU accelerator counts: GPU ranks mostly wait on their GPU.
    """
    from lightning.pytorch.accelerators import CPUAccelerator
    from lightning.pytorch.strategies import DDPStrategy

    if not isinstance(trainer.strategy, DDPStrategy):
        return None
    if not isinstance(trainer.accelerator, CPUAccelerator):
        return None
    processes, cores = int(trainer.num_devices), available_cores()
    if processes <= cores:
        return None
    message = (
        f"trainer=ddp starts {processes} CPU processes on this machine, but only {cores} "
        f"core(s) are available to it: the processes take turns on the cores, so the run is "
        f"slower than with fewer of them, not faster. Set trainer.devices={cores} or fewer "
        "(each process then has a core of its own with OMP_NUM_THREADS=1)."
    )
    log.warning("%s", message)
    return message
