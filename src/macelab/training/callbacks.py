"""Lightning callbacks of macelab."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.callbacks import LearningRateMonitor as LightningLearningRateMonitor


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps and at every epoch end.

    The step-based save is skipped on the last batch of an epoch: at that point the epoch's
    validation and learning-rate step have not run yet, and a run resumed from such a file
    would skip them. The epoch-end save that follows (after validation and the schedule)
    covers that batch, so a run killed at any moment resumes exactly.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("save_top_k", 0)
        kwargs.setdefault("save_last", True)
        kwargs.setdefault("save_on_train_epoch_end", True)
        super().__init__(**kwargs)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


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


def _synchronize(pl_module) -> None:
    """Wait for queued GPU work, so that wall-clock readings include it."""
    import torch

    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
