"""``metrics.csv``: every row a run logs, kept through kills, resumes and outside meddling.

Lightning's ``CSVLogger`` deletes the ``metrics.csv`` it finds when a run starts (so a run
resumed in its own folder loses its earlier rows), and rewrites the file in place whenever
a new column appears (a kill at that moment empties it). :class:`MetricsCSVLogger`:

* appends each new row to the file as it is logged. It rewrites the file only when a
  column appears, or when the file is no longer the one it wrote (removed, replaced or cut
  by someone else);
  then it writes the whole file from the rows it holds in memory, atomically
  (:func:`~macelab.training.checkpoint_io.write_atomically`). The file thus always holds
  every row logged so far, and a row is never lost to a rewrite. Appends are flushed, not
  synced: they survive a killed process, not necessarily a crash of the machine.
* on a resume (``resume_from``: the checkpoint the run continues from) reads the rows the
  file already has, keeps those logged before the checkpoint's step and drops the later
  ones, which the resumed run logs again (it replays those steps): no step appears twice.
  A row cut short by a kill is dropped.
* in a new run that finds a ``metrics.csv`` (a run folder reused without ``ckpt_path``),
  moves that file to ``metrics.1.csv`` (``.2``, ...) instead of deleting it.

The rows are kept in memory as well (a few hundred bytes each: 100,000 rows, tens of MB).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from macelab.loading import load_weights
from macelab.training.checkpoint_io import write_atomically

log = logging.getLogger(__name__)

Row = dict[str, Any]


class MetricsTable:
    """The rows of one CSV file, mirrored to it append-only (see the module docstring)."""

    def __init__(self, path: str | Path, rows: list[Row] | None = None) -> None:
        self.path = Path(path)
        self.rows: list[Row] = list(rows or [])
        self.columns: list[str] = []
        self._written = 0  # rows[:_written] are in the file
        self._file: tuple[int, int, int] | None = None  # (device, inode, size) as last written

    @classmethod
    def resumed(cls, path: str | Path, before_step: int) -> MetricsTable:
        """The rows of the file at ``path`` logged before ``before_step`` (a resumed run
        logs the later ones again)."""
        kept = [row for row in read_rows(path) if _step(row) < before_step]
        return cls(path, kept)

    @classmethod
    def fresh(cls, path: str | Path) -> MetricsTable:
        """An empty table; a file already at ``path`` is moved to ``<stem>.<n><suffix>``."""
        path = Path(path)
        if path.exists():
            number = 1
            while (aside := path.with_name(f"{path.stem}.{number}{path.suffix}")).exists():
                number += 1
            os.replace(path, aside)
            log.warning("%s belonged to an earlier run: moved to %s", path, aside.name)
        return cls(path)

    def append(self, row: Row) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        """Write the rows not yet in the file: appended, or the whole file if need be."""
        pending = self.rows[self._written :]
        if not pending:
            return
        columns = sorted(set(self.columns).union(*pending))
        if columns != self.columns or not self._file_is_ours():
            self.columns = columns
            text = _render(self.rows, columns, header=True)
            write_atomically(self.path, lambda stream: stream.write(text.encode()))
        else:
            with open(self.path, "ab") as stream:
                stream.write(_render(pending, columns, header=False).encode())
        self._written = len(self.rows)
        stat = self.path.stat()
        self._file = (stat.st_dev, stat.st_ino, stat.st_size)

    def _file_is_ours(self) -> bool:
        """Whether the file is the one this table last wrote, unchanged."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        return self._file == (stat.st_dev, stat.st_ino, stat.st_size)


def read_rows(path: str | Path) -> list[Row]:
    """The rows of a metrics CSV file (values as written; empty cells left out), without a
    last row that a kill cut short; none if there is no file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return [
        {key: value for key, value in row.items() if key is not None and value not in ("", None)}
        for row in csv.DictReader(io.StringIO(text))
    ]


def _step(row: Row) -> float:
    try:
        return float(row["step"])
    except (KeyError, TypeError, ValueError):
        return float("-inf")  # a row without a step is kept


def _render(rows: list[Row], columns: list[str], *, header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def checkpoint_step(path: str | Path, trust_pickle: bool = False) -> int:
    """The global step a checkpoint was saved at (read weights-only unless ``trust_pickle``,
    as every checkpoint load in macelab: docs/security.md)."""
    return int(load_weights(path, trust_pickle=trust_pickle)["global_step"])


class MetricsCSVLogger(Logger):
    """Metrics to ``<save_dir>/metrics.csv`` and hyper-parameters to ``hparams.yaml``.

    Args:
        save_dir: the run folder.
        resume_from: the checkpoint this run resumes from (``conf/logger/csv.yaml`` passes
            the run's ``ckpt_path``); rows of an existing ``metrics.csv`` logged at or after
            its step are dropped, as the resumed run logs them again. ``None``: a new run.
    """

    METRICS_FILE = "metrics.csv"
    HPARAMS_FILE = "hparams.yaml"

    def __init__(
        self,
        save_dir: str | Path,
        resume_from: str | Path | None = None,
        trust_pickle: bool = False,
    ) -> None:
        super().__init__()
        self._save_dir = Path(save_dir)
        self.resume_from = None if resume_from in (None, "") else Path(resume_from)
        self.trust_pickle = bool(trust_pickle)
        self._table: MetricsTable | None = None
        self._hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self._save_dir)

    @property
    def log_dir(self) -> str:
        return str(self._save_dir)

    @property
    def table(self) -> MetricsTable:
        """The run's rows (created at first use: on rank 0 only)."""
        if self._table is None:
            path = self._save_dir / self.METRICS_FILE
            if self.resume_from is None:
                self._table = MetricsTable.fresh(path)
            else:
                self._table = MetricsTable.resumed(
                    path, checkpoint_step(self.resume_from, self.trust_pickle)
                )
        return self._table

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any):
        self._hparams.update(vars(params) if isinstance(params, Namespace) else params)
        self._save_dir.mkdir(parents=True, exist_ok=True)
        path = self._save_dir / self.HPARAMS_FILE
        temporary = path.with_name(f".{path.name}.writing")
        save_hparams_to_yaml(temporary, self._hparams)
        os.replace(temporary, path)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row: Row = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        row["step"] = len(self.table.rows) if step is None else step
        self.table.append(row)
        # Written at once: callbacks such as LearningRateMonitor log without calling save(),
        # and a row still in memory when a checkpoint is saved would be lost to a kill that
        # follows (the resumed run does not log it again).
        self.table.flush()

    @rank_zero_only
    def save(self) -> None:
        super().save()
        self.table.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._table is not None:
            self._table.flush()
