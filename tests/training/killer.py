"""A callback that kills a training run right after a given optimiser step (for tests)."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class KilledError(RuntimeError):
    """Raised to stop a run as abruptly as a kill would."""


class KillAfterStep(Callback):
    """Raise :class:`KilledError` after the batch that brings ``global_step`` to ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            raise KilledError(f"killed after step {trainer.global_step}")
