"""Lightning callbacks of macelab."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.callbacks import LearningRateMonitor as LightningLearningRateMonitor


class LastCheckpoint(Checkpoint):
    """``last.ckpt``, the latest state of the run: what ``ckpt_path=last`` resumes from.

    Written every ``every_n_train_steps`` optimiser steps, at every epoch end and when
    training ends, whatever ended it (``max_epochs``, ``max_steps``, ``max_time``, a stop
    requested by a callback): a finished run's ``last.ckpt`` is its final state, and a run
    killed at any moment resumes from at most ``every_n_train_steps`` steps back.

    The epoch-end save comes after the epoch's validation and learning-rate step (Lightning
    calls checkpoint callbacks after the LightningModule's ``on_train_epoch_end``). The
    step-based save is skipped on the last batch of an epoch: there the validation and the
    learning-rate step have not run yet, and the epoch-end save follows anyway.

    Lightning's ``ModelCheckpoint(save_last=True, save_top_k=0)``, which this replaces,
    writes ``last.ckpt`` only at the step-based saves (its epoch-end save is skipped unless a
    top-k save happened at the same step), so a finished run's ``last.ckpt`` lagged behind.
    Files are written by the Trainer's checkpoint writer
    (:class:`macelab.training.checkpoint_io.AtomicCheckpointIO` in macelab's runs).
    """

    def __init__(
        self, dirpath: str | Path, every_n_train_steps: int = 100, filename: str = "last"
    ) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = int(every_n_train_steps)
        self.filename = filename
        self._saved_step: int | None = None  # the global step of the latest save
        self._unsaved = False  # batches ran since the latest save

    @property
    def last_model_path(self) -> str:
        return str(self.dirpath / f"{self.filename}.ckpt")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._unsaved = True
        every = self.every_n_train_steps
        if (
            every < 1
            or trainer.global_step % every != 0
            or trainer.global_step == self._saved_step  # a skipped (non-finite) step
            or batch_idx + 1 >= trainer.num_training_batches
        ):
            return
        self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._unsaved:
            self._save(trainer)

    def _save(self, trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.last_model_path, weights_only=False)
        self._saved_step, self._unsaved = trainer.global_step, False


class LearningRateMonitor(LightningLearningRateMonitor):
    """Lightning's ``LearningRateMonitor`` (``lr-Adam/decay``, ``lr-Adam/no_decay``: each
    parameter group's learning rate), silent instead of failing when the run has no logger
    (``logger=none``)."""

    def on_train_start(self, trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)


class TimingCallback(Callback):
    """Log wall times: ``time/elapsed_s`` with every validation, and per training epoch
    ``time/train_epoch_s`` (the epoch's training time, validation excluded) and
    ``time/train_configurations`` (configurations trained on in that epoch, all ranks).

    Learning curves over wall time (time to accuracy) and throughput need them; ``metrics.csv``
    otherwise only has steps. The elapsed clock counts from the start of fitting and carries
    over a resume (it is saved in the checkpoint), so it is the time the run has spent.
    """

    def __init__(self) -> None:
        self.elapsed_before = 0.0
        self._started: float | None = None
        self._epoch_started: float | None = None
        self._epoch_train_s: float | None = None
        self._epoch_configurations = 0

    def elapsed(self) -> float:
        running = 0.0 if self._started is None else time.perf_counter() - self._started
        return self.elapsed_before + running

    def on_fit_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.elapsed_before, self._started = self.elapsed(), None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _synchronize(pl_module)
        self._epoch_started = time.perf_counter()
        self._epoch_train_s = None
        self._epoch_configurations = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._epoch_configurations += int(getattr(batch, "num_graphs", 0))

    def _stop_epoch_clock(self, pl_module) -> None:
        if self._epoch_train_s is None and self._epoch_started is not None:
            _synchronize(pl_module)
            self._epoch_train_s = time.perf_counter() - self._epoch_started

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._stop_epoch_clock(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            pl_module.log("time/elapsed_s", self.elapsed())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop_epoch_clock(pl_module)
        if self._epoch_train_s is not None:
            pl_module.log("time/train_epoch_s", self._epoch_train_s)
            pl_module.log(
                "time/train_configurations", float(self._epoch_configurations * trainer.world_size)
            )

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.elapsed_before = float(state_dict.get("elapsed_s", 0.0))


class EpochProgress(Callback):
    """One log line per training epoch and per test set, whether or not output goes to a
    terminal: ``epoch 3/8: val F RMSE 120.4 meV/Å, E RMSE 85.2 meV (36 s; 1.8 min so far)``,
    ``tested test_MD_300K: 65 batches in 12 s``.

    The progress bar shows only on a terminal and vanishes from files and CI logs; these
    lines go to the terminal and to the run's log file. A time-budgeted run
    (``trainer.max_time``) shows the budget beside the time so far.
    """

    def __init__(self, logger: str = "macelab.train") -> None:
        self._logger = logging.getLogger(logger)
        self._fit_started: float | None = None
        self._epoch_started: float | None = None
        self._test_started: float | None = None

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._test_started = time.perf_counter()

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        totals = trainer.num_test_batches
        total = totals[dataloader_idx] if dataloader_idx < len(totals) else None
        if not trainer.is_global_zero or total != batch_idx + 1 or self._test_started is None:
            return
        names = list(getattr(pl_module, "test_set_names", None) or [])
        name = names[dataloader_idx] if dataloader_idx < len(names) else f"#{dataloader_idx}"
        now = time.perf_counter()
        self._logger.info("tested %s: %d batches in %.0f s", name, total, now - self._test_started)
        self._test_started = now

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_started = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self._epoch_started is None:
            return
        now = time.perf_counter()
        metrics = trainer.callback_metrics
        parts = []
        for key, label, unit in (
            ("val/forces_rmse_meV_per_A", "val F RMSE", "meV/Å"),
            ("val/energy_rmse_meV", "E RMSE", "meV"),
        ):
            if key in metrics:
                parts.append(f"{label} {float(metrics[key]):.1f} {unit}")
        if not parts and "train/loss" in metrics:
            parts.append(f"train loss {float(metrics['train/loss']):.4g}")
        total = f"/{trainer.max_epochs}" if trainer.max_epochs not in (None, -1) else ""
        budget = _max_time(trainer)
        elapsed = now - (self._fit_started or self._epoch_started)
        so_far = f"{elapsed / 60:.1f} min so far" + (f" of {budget}" if budget else "")
        self._logger.info(
            "epoch %d%s: %s (%.0f s; %s)",
            trainer.current_epoch + 1,
            total,
            ", ".join(parts) or "no metrics",
            now - self._epoch_started,
            so_far,
        )


def _max_time(trainer) -> str | None:
    """The run's ``max_time`` budget in words (``8.0 min``), or None."""
    for callback in trainer.callbacks:
        limit = getattr(callback, "_duration", None)
        if type(callback).__name__ == "Timer" and limit:
            return f"{limit / 60:.1f} min"
    return None


def _synchronize(pl_module) -> None:
    """Wait for queued GPU work, so that wall-clock readings include it."""
    import torch

    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
