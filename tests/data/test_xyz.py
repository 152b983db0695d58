"""Extended XYZ reading: counts, units and labels of the shared files, keys, periodicity."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from macelab.data.files import content_sha256
from macelab.data.graph import configuration_to_graph
from macelab.data.packaged import packaged_path
from macelab.data.xyz import LabelKeys, read_xyz

ACAC_SIZES = {
    "train_300K": 500,
    "train_600K": 500,
    "test_MD_300K": 650,
    "test_MD_600K": 650,
    "test_H_transfer": 15,
    "test_dihedral": 45,
}


def test_3bpa_training_sets(shared_data_root):
    for name in ("train_300K", "train_mixedT"):
        configs = read_xyz(shared_data_root / "dataset_3BPA" / f"{name}.xyz")
        assert len(configs) == 500
        assert {c.num_atoms for c in configs} == {27}
        assert set(np.unique(np.concatenate([c.atomic_numbers for c in configs]))) == {1, 6, 7, 8}
        assert all(c.forces is not None and c.forces.shape == (27, 3) for c in configs)
        assert all(c.pbc == (False, False, False) for c in configs)
    first = read_xyz(shared_data_root / "dataset_3BPA" / "train_300K.xyz")[0]
    assert first.energy == pytest.approx(-17660.461737861464, abs=1e-9)  # eV, as in the file
    np.testing.assert_allclose(first.forces[0], [0.17092934, 0.13274200, 0.79555789])
    np.testing.assert_allclose(first.positions[1], [-0.19461567, 0.25830309, 0.83413890])


def test_3bpa_isolated_atoms_match_readme(shared_data_root):
    configs = read_xyz(shared_data_root / "dataset_3BPA" / "iso_atoms.xyz")
    e0s = {int(c.atomic_numbers[0]): c.energy for c in configs}
    assert e0s == {
        1: -13.587222780835477,
        6: -1029.4889999855063,
        7: -1484.9814568572233,
        8: -2041.9816003861047,
    }


def test_acac_sets_counts_and_labels(shared_data_root):
    folder = shared_data_root / "dataset_acac"
    for name, size in ACAC_SIZES.items():
        configs = read_xyz(folder / f"{name}.xyz")
        assert len(configs) == size, name
        assert {c.num_atoms for c in configs} == {15}
        assert all(c.energy is not None for c in configs)
        has_forces = {c.forces is not None for c in configs}
        assert has_forces == ({False} if name in ("test_H_transfer", "test_dihedral") else {True})
    first = read_xyz(folder / "train_300K.xyz")[0]
    assert first.energy == -9391.45554428476
    assert first.config_type == "300K_MD"
    assert first.info["dihedral_angle"] == pytest.approx(8.02164373962562)


def test_packaged_copy_is_the_official_file(shared_data_root):
    for name in ("train_300K", "test_MD_300K", "test_H_transfer", "isolated_atoms"):
        packaged = packaged_path(f"dataset_acac/{name}.xyz")
        shared = shared_data_root / "dataset_acac" / f"{name}.xyz"
        assert content_sha256(packaged) == content_sha256(shared)
    a = read_xyz(packaged_path("dataset_acac/test_dihedral.xyz"))
    b = read_xyz(shared_data_root / "dataset_acac" / "test_dihedral.xyz")
    assert [c.energy for c in a] == [c.energy for c in b]


EXT_XYZ = (
    "2\n"
    'Lattice="4.0 0.0 0.0 0.0 4.0 0.0 0.0 0.0 9.0" '
    "Properties=species:S:1:pos:R:3:REF_forces:R:3 REF_energy=-3.5 "
    'REF_stress="1.0 2.0 3.0 2.0 4.0 5.0 3.0 5.0 6.0" pbc="T T F"\n'
    "H 0.0 0.0 0.0 0.1 0.2 0.3\n"
    "H 0.0 0.0 0.74 -0.1 -0.2 -0.3\n"
)


def test_label_keys_are_configurable(tmp_path):
    path = tmp_path / "ref.xyz"
    path.write_text(EXT_XYZ)
    keys = LabelKeys(energy="REF_energy", forces="REF_forces", stress="REF_stress")
    (config,) = read_xyz(path, keys)
    assert config.energy == -3.5
    np.testing.assert_array_equal(config.forces, [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])
    np.testing.assert_array_equal(config.stress, [[1, 2, 3], [2, 4, 5], [3, 5, 6]])
    assert config.pbc == (True, True, False)
    (unlabelled,) = read_xyz(path)  # default keys: none of these labels
    assert unlabelled.energy is None and unlabelled.forces is None and unlabelled.stress is None


def test_default_keys_read_ase_calculator_labels(tmp_path):
    text = EXT_XYZ.replace("REF_", "")
    path = tmp_path / "calc.xyz.gz"
    path.write_bytes(gzip.compress(text.encode()))  # gzip is detected by content
    (config,) = read_xyz(path)
    assert config.energy == -3.5
    np.testing.assert_array_equal(config.stress, [[1, 2, 3], [2, 4, 5], [3, 5, 6]])
    assert config.forces[1, 2] == -0.3


def test_pbc_flags_decide_not_the_lattice():
    (config,) = read_xyz(packaged_path("dataset_acac/test_H_transfer.xyz"))[:1]
    assert config.pbc == (False, False, False)
    assert np.allclose(np.diag(config.cell), 50.0)  # the file's box is kept on the config
    graph = configuration_to_graph(config, 5.0)
    assert not graph.pbc.any()
    assert np.all(graph.cell.numpy() == 0)  # but a non-periodic graph has no cell
    assert np.all(graph.unit_shifts.numpy() == 0)
