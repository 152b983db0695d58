"""Mid-epoch resume through Lightning: the resumed run sees exactly the remaining batches.

The LightningModule tells the data module where the interrupted epoch stopped
(``resume_training_at``); Lightning restores its own batch counter and counts the remaining
batches against the epoch's full length. Together they must replay the uninterrupted order.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from macelab.data.datamodule import MACEDataModule


class Recorder(L.LightningModule):
    """Records the record indices of every training batch; resumes like macelab's module."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []
        self.batches_done_in_epoch = 0

    def on_train_epoch_start(self) -> None:
        if getattr(self, "_resumed_epoch", None) != self.current_epoch:
            self.batches_done_in_epoch = 0
        self._resumed_epoch = None

    def training_step(self, batch, batch_idx):
        self.batches_done_in_epoch += 1
        self.seen.append(batch.index.tolist())
        return (self.weight - 1.0) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["batches_done_in_epoch"] = self.batches_done_in_epoch

    def on_load_checkpoint(self, checkpoint) -> None:
        self.batches_done_in_epoch = checkpoint["batches_done_in_epoch"]
        self._resumed_epoch = int(checkpoint["epoch"])
        self.trainer.datamodule.resume_training_at(self._resumed_epoch, self.batches_done_in_epoch)


def fit(folder, cache, max_steps=-1, ckpt_path=None) -> list[list[int]]:
    datamodule = MACEDataModule(
        dataset="acac", r_max=4.0, num_train=30, num_valid=5, batch_size=5, cache_dir=cache
    )
    module = Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        max_steps=max_steps,
        callbacks=[ModelCheckpoint(dirpath=folder, save_last=True, every_n_train_steps=1)],
        logger=False,
        limit_val_batches=0,
        use_distributed_sampler=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return module.seen


def test_resumed_run_replays_the_uninterrupted_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MACELAB_DATA", raising=False)
    cache = tmp_path / "cache"
    straight = fit(tmp_path / "straight", cache)
    assert len(straight) == 12  # 2 epochs x 6 batches
    first = fit(tmp_path / "interrupted", cache, max_steps=4)  # stops mid-epoch 0
    rest = fit(tmp_path / "interrupted", cache, ckpt_path=tmp_path / "interrupted" / "last.ckpt")
    assert first + rest == straight
