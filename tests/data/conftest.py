"""Fixtures for the data tests: a private cache, no network, and rMD17-layout files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from macelab.data.units import KCAL_PER_MOL_IN_EV
from macelab.data.xyz import read_xyz


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One graph/download cache for the whole session (tests share cached graphs)."""
    return tmp_path_factory.mktemp("macelab_cache")


@pytest.fixture(autouse=True)
def _private_cache_and_offline(session_cache, monkeypatch):
    """Never write to ~/.cache and never touch the network (download tests opt back in)."""
    monkeypatch.setenv("MACELAB_CACHE", str(session_cache))
    monkeypatch.setenv("MACELAB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ethanol_frames(shared_data_root):
    """The 2000 rMD17-derived ethanol configurations of the shared data (train + test_MD)."""
    folder = shared_data_root / "dataset_ethanol"
    configs = read_xyz(folder / "train.xyz") + read_xyz(folder / "test_MD.xyz")
    z = configs[0].atomic_numbers
    assert all(np.array_equal(c.atomic_numbers, z) for c in configs)
    return configs


@pytest.fixture(scope="session")
def rmd17_root(tmp_path_factory, ethanol_frames) -> Path:
    """A data root with ``rmd17/`` in the archive's exact layout, built from ethanol frames.

    ``rmd17_ethanol.npz`` holds the 2000 frames with energies in kcal/mol and forces in
    kcal/mol/Å (converted back from eV), and five published-style splits of 1000 + 1000.
    """
    root = tmp_path_factory.mktemp("rmd17_root")
    npz_dir = root / "rmd17" / "npz_data"
    split_dir = root / "rmd17" / "splits"
    npz_dir.mkdir(parents=True)
    split_dir.mkdir(parents=True)
    configs = ethanol_frames
    np.savez(
        npz_dir / "rmd17_ethanol.npz",
        nuclear_charges=configs[0].atomic_numbers.astype(np.int64),
        coords=np.stack([c.positions for c in configs]),
        energies=np.array([c.energy for c in configs]) / KCAL_PER_MOL_IN_EV,
        forces=np.stack([c.forces for c in configs]) / KCAL_PER_MOL_IN_EV,
        old_indices=np.arange(len(configs)),
    )
    rng = np.random.default_rng(17)
    for split in range(1, 6):
        order = rng.permutation(len(configs))
        for kind, part in (("train", order[:1000]), ("test", order[1000:])):
            text = "".join(f"{i}\n" for i in part)
            (split_dir / f"index_{kind}_0{split}.csv").write_text(text)
    return root
