"""Lightning callbacks of macelab."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


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
