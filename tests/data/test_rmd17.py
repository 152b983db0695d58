"""rMD17: unit conversion, published splits and the MACE protocol, on files in its layout."""

from __future__ import annotations

import numpy as np
import pytest

from macelab.data.datamodule import MACEDataModule
from macelab.data.download import REGISTRY
from macelab.data.rmd17 import (
    RMD17_MOLECULES,
    mace_protocol_split,
    npz_relpath,
    read_rmd17_npz,
    read_split_indices,
    split_relpath,
)
from macelab.data.units import KCAL_PER_MOL_IN_EV
from macelab.errors import ConfigError


def test_kcal_per_mol_constant_is_exact():
    # 1 kcal/mol = 4184 J / N_A / e, all three exact in SI 2019: 0.043364104241800934 eV.
    ev = KCAL_PER_MOL_IN_EV
    assert ev == pytest.approx(0.0433641042418009, rel=1e-15)
    assert 1 / ev == pytest.approx(23.060547830619029, rel=1e-14)


def test_ten_molecules_with_files_and_splits():
    assert len(RMD17_MOLECULES) == 10
    for molecule in RMD17_MOLECULES:
        assert npz_relpath(molecule) == f"rmd17/npz_data/rmd17_{molecule}.npz"
        assert REGISTRY[npz_relpath(molecule)].archive == "rmd17.tar.bz2"
    for split in range(1, 6):
        for kind in ("train", "test"):
            assert split_relpath(kind, split) in REGISTRY
    with pytest.raises(ConfigError, match="aspirin"):
        npz_relpath("water")
    with pytest.raises(ConfigError, match="1 to 5"):
        split_relpath("train", 6)


def test_npz_is_converted_to_ev(rmd17_root, ethanol_frames):
    arrays = read_rmd17_npz(rmd17_root / "rmd17/npz_data/rmd17_ethanol.npz")
    assert arrays.num_frames == 2000
    assert arrays.atomic_numbers.tolist() == ethanol_frames[0].atomic_numbers.tolist()
    energies_ev = np.array([c.energy for c in ethanol_frames])
    np.testing.assert_allclose(arrays.energies, energies_ev, rtol=1e-14)
    np.testing.assert_allclose(arrays.forces[7], ethanol_frames[7].forces, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(arrays.positions[1999], ethanol_frames[1999].positions)
    with np.load(rmd17_root / "rmd17/npz_data/rmd17_ethanol.npz") as raw:  # kcal/mol in file
        assert arrays.energies[3] == raw["energies"][3] * KCAL_PER_MOL_IN_EV


def test_published_splits_are_read_in_file_order(rmd17_root):
    path = rmd17_root / "rmd17/splits/index_train_01.csv"
    indices = read_split_indices(path, num_frames=2000)
    assert indices.shape == (1000,)
    assert indices.tolist() == [int(line) for line in path.read_text().split()]
    test = read_split_indices(rmd17_root / "rmd17/splits/index_test_01.csv", num_frames=2000)
    assert not set(indices) & set(test)


def test_mace_protocol_is_reproducible_and_disjoint():
    pool = np.arange(1000) * 3 + 7
    train, valid = mace_protocol_split(pool, 950, 50, seed=0)
    again_train, again_valid = mace_protocol_split(pool, 950, 50, seed=0)
    other_train, _ = mace_protocol_split(pool, 950, 50, seed=1)
    assert (len(train), len(valid)) == (950, 50)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(valid, again_valid)
    assert not set(train) & set(valid)
    assert set(train) | set(valid) == set(pool)
    assert not np.array_equal(train, other_train)


def test_rmd17_data_module(rmd17_root):
    module = MACEDataModule(
        dataset="rmd17", root=rmd17_root, molecule="ethanol", split=2, r_max=4.0
    )
    module.setup("fit")
    assert (len(module.train_dataset), len(module.val_dataset)) == (950, 50)
    assert module.test_set_names == ["test"]
    assert len(module.test_datasets["test"]) == 1000
    pool = read_split_indices(rmd17_root / "rmd17/splits/index_train_02.csv", 2000)
    test = read_split_indices(rmd17_root / "rmd17/splits/index_test_02.csv", 2000)
    train_frames = module.train_dataset.tensors["index"].numpy()
    valid_frames = module.val_dataset.tensors["index"].numpy()
    assert set(train_frames) | set(valid_frames) == set(pool)
    np.testing.assert_array_equal(module.test_datasets["test"].tensors["index"].numpy(), test)
    expected_train, _ = mace_protocol_split(pool, 950, 50, seed=0)
    np.testing.assert_array_equal(train_frames, expected_train)
    assert module.statistics.e0_source == "least_squares"
    assert module.statistics.atomic_numbers == [1, 6, 8]
    assert module.statistics.num_configurations == 950
    graph = module.test_datasets["test"][0]  # frame test[0], energies in eV
    arrays = read_rmd17_npz(rmd17_root / "rmd17/npz_data/rmd17_ethanol.npz")
    assert float(graph.energy) == arrays.energies[test[0]]
