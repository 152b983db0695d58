"""The data module under real two-process DDP (gloo, Lightning's ddp strategy, CPU).

Each rank must compute the same split and statistics, train on a different, equally long
share of the training set, and evaluate every validation and test structure exactly once.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import lightning  # noqa: F401  (imported before forking the ranks)
import pytest
import torch
import torch.multiprocessing as mp

import macelab.data.datamodule  # noqa: F401

SMALL = {"num_train": 30, "num_valid": 9, "batch_size": 4, "valid_batch_size": 4}


def _worker(rank: int, port: int, out: str, cache: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
        MACELAB_CACHE=cache,
        MACELAB_OFFLINE="1",
    )
    os.environ.pop("MACELAB_DATA", None)
    import lightning as L

    from macelab.data.datamodule import MACEDataModule

    class Recorder(L.LightningModule):
        """Records which structures each stage sees on this rank; learns nothing."""

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))
            self.seen: dict[str, list] = {}

        def _record(self, stage: str, batch) -> None:
            self.seen.setdefault(stage, []).extend(batch.index.tolist())

        def training_step(self, batch, batch_idx):
            self._record(f"train_epoch{self.current_epoch}", batch)
            return self.weight * batch.energy.sum() * 0.0

        def validation_step(self, batch, batch_idx):
            self._record("valid", batch)

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self._record(self.trainer.datamodule.test_set_names[dataloader_idx], batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    datamodule = MACEDataModule(dataset="acac", r_max=4.0, seed=11, **SMALL)
    module = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    stats = datamodule.statistics.to_dict()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"seen": module.seen, "stats": stats}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_ddp_splits_training_and_evaluates_everything_once(tmp_path):
    cache = tmp_path / "cache"
    # fork: the workers inherit the imported modules (a fresh interpreter per rank would spend
    # most of the test importing torch, e3nn and Lightning again); CPU only, no CUDA state.
    mp.start_processes(
        _worker,
        args=(_free_port(), str(tmp_path), str(cache)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["stats"] == ranks[1]["stats"]  # same split and statistics everywhere
    seen = [r["seen"] for r in ranks]
    for epoch in (0, 1):
        a, b = seen[0][f"train_epoch{epoch}"], seen[1][f"train_epoch{epoch}"]
        assert len(a) == len(b) == 15 and not set(a) & set(b)  # 30 structures, 2 ranks
    assert seen[0]["train_epoch0"] != seen[0]["train_epoch1"]  # reshuffled each epoch
    sizes = {
        "valid": 18,
        "test_MD_300K": 650,
        "test_MD_600K": 650,
        "test_H_transfer": 15,
        "test_dihedral": 45,
    }  # fmt: skip  (validation ran once per epoch: 2 x 9)
    for stage, size in sizes.items():
        together = seen[0][stage] + seen[1][stage]
        assert len(together) == size, stage
    valid = seen[0]["valid"] + seen[1]["valid"]
    assert len(set(valid)) == 9 and all(valid.count(i) == 2 for i in set(valid))
    for name in ("test_MD_300K", "test_H_transfer", "test_dihedral"):
        assert sorted(seen[0][name] + seen[1][name]) == list(range(sizes[name]))
