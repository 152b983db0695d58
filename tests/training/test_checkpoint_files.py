"""Atomic checkpoint writes, ``last.ckpt`` as the final state, the append-only metrics CSV
and the wandb run id kept for a resume; without MACE (seconds)."""

from __future__ import annotations

import os
import stat
import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from macelab.training.callbacks import LastCheckpoint
from macelab.training.checkpoint_io import AtomicCheckpointIO, write_atomically
from macelab.training.csv_logger import MetricsCSVLogger, MetricsTable, read_rows
from macelab.training.loggers import RUN_ID_FILE, wandb_run_id

# ------------------------------------------------------------------------ atomic writes


def test_write_atomically_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"old")
    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"left by a killed writer")
    write_atomically(path, lambda stream: stream.write(b"new"))
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"old")

    def fail_halfway(stream):
        stream.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, fail_halfway)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_new_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_atomically(tmp_path / "a.ckpt", lambda stream: stream.write(b"x"))
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.ckpt").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_checkpoint_io_round_trip_ignores_tmpdir(tmp_path, monkeypatch):
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.arange(3.0)}, tmp_path / "ckpts" / "last.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "ckpts" / "last.ckpt")["w"], torch.arange(3.0))
    assert not list(elsewhere.iterdir())  # the temporary file lived beside the checkpoint


# ----------------------------------------------------------- last.ckpt is the final state


class Regression(L.LightningModule):
    """A linear fit; each step sleeps ``step_s`` (for max_time)."""

    def __init__(self, step_s: float = 0.0) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.step_s = step_s

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_s)
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=5)  # 8 batches


class StopAfter(L.Callback):
    """Request a stop after ``step`` steps, as EarlyStopping or the Timer do."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


@pytest.mark.parametrize(
    "limits",
    [
        {"max_epochs": 2},  # ends on an epoch end
        {"max_steps": 11},  # mid-epoch, between two step-based saves
        {"max_steps": 12},  # mid-epoch, on a step-based save
        {"max_epochs": 5, "callbacks": [StopAfter(13)]},  # a stop request mid-epoch
        {"max_time": {"seconds": 1}, "step_s": 0.15},  # a time budget
    ],
    ids=["max_epochs", "max_steps", "max_steps_on_save", "should_stop", "max_time"],
)
def test_last_checkpoint_is_the_final_state(tmp_path, limits):
    limits = dict(limits)
    module = Regression(step_s=limits.pop("step_s", 0.0))
    callbacks = [LastCheckpoint(dirpath=tmp_path, every_n_train_steps=4)]
    callbacks += limits.pop("callbacks", [])
    trainer = L.Trainer(
        **limits,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(module)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["global_step"] == trainer.global_step
    for name, value in module.state_dict().items():
        assert torch.equal(saved["state_dict"][name], value), name


# ------------------------------------------------------------------ the metrics CSV file


def _rows(path):
    return [{k: float(v) for k, v in row.items()} for row in read_rows(path)]


def test_rows_are_appended_and_a_new_column_rewrites_the_file_whole(tmp_path):
    path = tmp_path / "metrics.csv"
    table = MetricsTable.fresh(path)
    table.append({"step": 0, "train/loss": 1.0})
    table.flush()
    inode = path.stat().st_ino
    table.append({"step": 1, "train/loss": 0.5})
    table.flush()
    assert path.stat().st_ino == inode  # appended in place
    table.append({"step": 1, "val/loss": 0.7, "epoch": 0})
    table.flush()
    assert path.stat().st_ino != inode  # a new header: the file was replaced, not cut
    assert path.read_text().splitlines()[0] == "epoch,step,train/loss,val/loss"
    assert _rows(path) == [
        {"step": 0.0, "train/loss": 1.0},
        {"step": 1.0, "train/loss": 0.5},
        {"epoch": 0.0, "step": 1.0, "val/loss": 0.7},
    ]


@pytest.mark.parametrize("meddling", ["removed", "rewritten", "truncated"])
def test_a_file_changed_under_the_logger_gets_every_row_back(tmp_path, meddling):
    path = tmp_path / "metrics.csv"
    table = MetricsTable.fresh(path)
    for step in range(3):
        table.append({"step": step, "train/loss": 1.0 / (step + 1)})
        table.flush()
    if meddling == "removed":
        path.unlink()
    elif meddling == "rewritten":
        path.write_text("step,train/loss\n2,0.3333333333333333\n")
    else:
        with open(path, "r+b") as stream:
            stream.truncate(20)
    table.append({"step": 3, "train/loss": 0.25})
    table.flush()
    assert [row["step"] for row in _rows(path)] == [0, 1, 2, 3]


def test_a_resumed_table_keeps_the_rows_before_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.csv"
    # rows up to step 7, the last one cut short by a kill
    path.write_text("epoch,step,train/loss\n0,1,0.9\n0,3,0.7\n0,5,0.5\n1,7,0.3\n1,9,0.")
    table = MetricsTable.resumed(path, before_step=5)
    assert [row["step"] for row in table.rows] == ["1", "3"]
    table.append({"epoch": 0, "step": 5, "train/loss": 0.5})
    table.flush()
    assert [row["step"] for row in _rows(path)] == [1, 3, 5]


def test_a_new_run_moves_an_old_metrics_file_aside(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,a\n0,1\n")
    (tmp_path / "metrics.1.csv").write_text("step,a\n0,2\n")
    table = MetricsTable.fresh(tmp_path / "metrics.csv")
    table.append({"step": 0, "a": 3})
    table.flush()
    assert (tmp_path / "metrics.2.csv").read_text() == "step,a\n0,1\n"
    assert _rows(tmp_path / "metrics.csv") == [{"step": 0.0, "a": 3.0}]


def test_logger_resumes_at_the_step_of_its_checkpoint(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss\n0,1.0\n3,0.5\n4,0.4\n")
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"global_step": 4}, checkpoint)
    logger = MetricsCSVLogger(tmp_path, resume_from=checkpoint)
    logger.log_hyperparams({"seed": 0})
    logger.log_metrics({"loss": torch.tensor(0.25)}, step=4)
    logger.save()
    assert [(row["step"], row["loss"]) for row in _rows(tmp_path / "metrics.csv")] == [
        (0.0, 1.0),
        (3.0, 0.5),
        (4.0, 0.25),
    ]
    assert "seed: 0" in (tmp_path / "hparams.yaml").read_text()


# ------------------------------------------------------------------------- wandb run id


def test_wandb_run_id_is_kept_for_a_resume(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    first = wandb_run_id(tmp_path, resuming=False)
    assert (tmp_path / RUN_ID_FILE).read_text().strip() == first
    assert wandb_run_id(tmp_path, resuming=True) == first
    second = wandb_run_id(tmp_path, resuming=False)  # a new run in the same folder
    assert second != first and wandb_run_id(tmp_path, resuming=True) == second
    monkeypatch.setenv("WANDB_RUN_ID", "fromagent")  # a sweep agent's run id wins
    assert wandb_run_id(tmp_path, resuming=True) == "fromagent"
