"""Shared fixtures: where the benchmark data is, and double precision for model tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _shared_data_root() -> Path | None:
    root = os.environ.get("MACELAB_DATA")
    if root and Path(root).is_dir():
        return Path(root)
    return None


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The shared benchmark data (``$MACELAB_DATA``), or skip with how to provide it."""
    root = _shared_data_root()
    if root is None:
        pytest.skip(
            "needs the benchmark data: set MACELAB_DATA to a folder holding dataset_3BPA/, "
            "dataset_acac/ and dataset_ethanol/ as in the BOTNet-datasets repository "
            "(https://github.com/davkovacs/BOTNet-datasets, MIT licence; make test sets it "
            "when ../shared/data exists)"
        )
    return root


@pytest.fixture(autouse=True)
def _restore_lightning_rank():
    """Put Lightning's process-wide rank back after each test.

    Building a DDP trainer (even one that starts no process, as the SLURM and torchrun
    configuration tests do) sets ``rank_zero_only.rank`` from the cluster environment; a
    later training test in the same pytest worker would then believe it is rank 3 and
    write no logs or ``metrics.csv``.
    """
    from lightning_utilities.core.rank_zero import rank_zero_only

    saved = getattr(rank_zero_only, "rank", 0)
    yield
    rank_zero_only.rank = saved
