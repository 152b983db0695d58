"""E0s from isolated atoms, from a mapping, and by least squares."""

from __future__ import annotations

import numpy as np
import pytest

from macelab.data.configuration import Configuration
from macelab.data.e0s import (
    e0s_for_elements,
    e0s_from_isolated_atoms,
    e0s_from_mapping,
    e0s_least_squares,
    is_isolated_atom,
)
from macelab.data.packaged import packaged_path
from macelab.data.store import GraphStore
from macelab.data.xyz import read_xyz
from macelab.errors import ConfigError, DataError

TRUE_E0S = {1: -13.6, 6: -1029.3, 7: -1484.9, 8: -2042.0}


def synthetic_store(seed: int = 0, noise: float = 0.0) -> GraphStore:
    """Configurations of random composition whose energy is sum of E0s (+ noise)."""
    rng = np.random.default_rng(seed)
    elements = np.array(sorted(TRUE_E0S))
    configs = []
    for k in range(40):
        z = rng.choice(elements, size=rng.integers(2, 12))
        energy = sum(TRUE_E0S[int(v)] for v in z) + noise * rng.normal()
        positions = rng.uniform(0, 8, size=(len(z), 3))
        configs.append(Configuration(z, positions, energy=energy, source="synthetic", index=k))
    return GraphStore.from_configurations(configs, 3.0)


def test_least_squares_recovers_known_e0s():
    store = synthetic_store()
    fitted = e0s_least_squares(store, store.elements())
    for z, value in TRUE_E0S.items():
        assert fitted[z] == pytest.approx(value, abs=1e-8)
    noisy = e0s_least_squares(synthetic_store(noise=0.01), store.elements())
    for z, value in TRUE_E0S.items():
        assert noisy[z] == pytest.approx(value, abs=0.05)


def test_least_squares_with_one_composition_is_min_norm():
    z = np.array([8, 1, 1])
    configs = [
        Configuration(z, np.random.default_rng(k).normal(size=(3, 3)), energy=-2069.2 + 0.01 * k)
        for k in range(5)
    ]
    fitted = e0s_least_squares(GraphStore.from_configurations(configs, 3.0), [1, 8])
    assert 2 * fitted[1] + fitted[8] == pytest.approx(np.mean([c.energy for c in configs]))
    assert fitted[1] / fitted[8] == pytest.approx(2 / 1)  # minimum norm: E0 proportional to count


def test_e0s_from_isolated_atom_files():
    iso = read_xyz(packaged_path("dataset_acac/isolated_atoms.xyz"))
    assert all(is_isolated_atom(c.config_type) for c in iso)
    e0s = e0s_from_isolated_atoms(GraphStore.from_configurations(iso, 5.0))
    assert e0s == {1: -13.568422178253735, 6: -1026.8538996116154, 8: -2037.796869412825}
    assert is_isolated_atom("IsolatedAtom") and not is_isolated_atom("300K_MD")


def test_isolated_atoms_must_be_single_atoms_with_consistent_energies():
    two_atoms = Configuration(np.array([1, 1]), np.array([[0, 0, 0], [0, 0, 0.7]]))
    two_atoms.energy, two_atoms.source = -27.0, "iso.xyz"
    with pytest.raises(DataError, match="one atom"):
        e0s_from_isolated_atoms(GraphStore.from_configurations([two_atoms], 3.0))
    a = Configuration(np.array([1]), np.zeros((1, 3)), energy=-13.6, index=0)
    b = Configuration(np.array([1]), np.zeros((1, 3)), energy=-13.5, index=1)
    with pytest.raises(DataError) as info:
        e0s_from_isolated_atoms(GraphStore.from_configurations([a, b], 3.0))
    assert info.value.record == 1 and info.value.field == "energy"


def test_mapping_accepts_numbers_and_symbols():
    assert e0s_from_mapping({1: -13.6, "C": -1029.3, "8": "-2042.0"}) == {
        1: -13.6,
        6: -1029.3,
        8: -2042.0,
    }
    with pytest.raises(ConfigError, match="Qq"):
        e0s_from_mapping({"Qq": 1.0})
    with pytest.raises(ConfigError, match="no E0 for N"):
        e0s_for_elements({1: -13.6, 6: -1029.3}, [1, 6, 7], "config")
