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
            "needs the shared benchmark data: set MACELAB_DATA to the folder that holds "
            "dataset_3BPA/, dataset_acac/ and dataset_ethanol/ (make test does this when "
            "../shared/data exists)"
        )
    return root
