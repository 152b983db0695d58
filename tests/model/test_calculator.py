"""The ASE calculator: same numbers as the model, precisions, periodic cells, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.stress import full_3x3_to_voigt_6_stress

from macelab.calculator import MACECalculator
from macelab.errors import AtomsTooCloseError, ConfigError
from macelab.model import MACE, UnknownElementError

from .helpers import batch, graph, read_molecule, relative_error, silicon_cell, small_model


@pytest.fixture(scope="module")
def model() -> MACE:
    return small_model(seed=6, channels=6, max_L=1)


def test_molecule_matches_model(model):
    atoms = read_molecule("3bpa", 1)
    atoms.calc = MACECalculator(model)
    expected = model(batch([atoms]))
    assert atoms.get_potential_energy() == pytest.approx(
        float(expected["energy"][0].detach()), abs=1e-12
    )
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    assert relative_error(atoms.get_forces(), expected["forces"]) < 1e-13
    node_energies = atoms.calc.get_property("node_energies")
    assert node_energies.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()  # stress only for periodic cells


def test_periodic_stress_matches_model(model):
    atoms = silicon_cell(seed=3)
    atoms.calc = MACECalculator(model)
    expected = model(batch([atoms]), compute_stress=True)
    voigt = full_3x3_to_voigt_6_stress(expected["stress"][0].detach().numpy())
    assert relative_error(atoms.get_stress(), voigt) < 1e-13
    assert relative_error(atoms.get_forces(), expected["forces"]) < 1e-13


def test_recomputes_when_atoms_move(model):
    atoms = read_molecule("ethanol")
    atoms.calc = MACECalculator(model)
    first = atoms.get_potential_energy()
    assert atoms.get_potential_energy() == first
    atoms.positions[0] += [0.05, 0.0, 0.0]
    moved = atoms.get_potential_energy()
    assert moved != first
    assert moved == pytest.approx(float(model(batch([atoms]))["energy"][0].detach()), abs=1e-12)


def test_float32_precision(model):
    atoms = read_molecule("acac", 3)
    calc64, calc32 = MACECalculator(model, precision="64"), MACECalculator(model, precision=32)
    assert calc32.model.dtype == torch.float32 and model.dtype == torch.float64
    e64 = calc64.get_potential_energy(atoms)
    e32 = calc32.get_potential_energy(atoms)
    assert isinstance(e32, float)
    assert abs(e32 - e64) < 1e-6 * abs(e64)
    f64, f32 = calc64.get_forces(atoms), calc32.get_forces(atoms)
    assert np.abs(f32 - f64).max() < 1e-4 * np.abs(f64).max()


def test_unknown_precision_names_the_choices(model):
    with pytest.raises(ConfigError, match="64, 32, tf32, 16-mixed, bf16-mixed, policy_"):
        MACECalculator(model, precision="16")


def test_accelerate_needs_cuda(model):
    with pytest.raises(ConfigError, match="CUDA"):
        MACECalculator(model, device="cpu", accelerate="graphs")


def test_unknown_element_names_it_and_the_table(model):
    atoms = silicon_cell()
    atoms.numbers[0] = 26
    atoms.calc = MACECalculator(model)
    with pytest.raises(UnknownElementError, match=r"Fe \(Z=26\).*") as error:
        atoms.get_potential_energy()
    assert "H, C, N, O, Si" in str(error.value)


def test_model_refuses_unknown_elements(model):
    atoms = silicon_cell()
    atoms.numbers[0] = 79
    with pytest.raises(UnknownElementError, match="Au"):
        model(batch([atoms]))


def test_skin_neighbour_list_is_reused_and_exact(model):
    """Small moves reuse the list built at r_max + skin; results equal a fresh list's."""
    atoms = read_molecule("3bpa")
    reused = MACECalculator(model, skin=0.5)
    fresh = MACECalculator(model, skin=0.0)
    rng = np.random.default_rng(0)
    for _ in range(8):
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.calc = reused
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = fresh
        assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-13, abs=1e-10)
        np.testing.assert_allclose(forces, atoms.get_forces(), rtol=1e-10, atol=1e-11)
    assert reused.neighbour_list_builds < fresh.neighbour_list_builds == 8


def test_plain_call_gives_the_model_only_edges_within_the_cutoff(model, monkeypatch):
    """The skin's extra edges stay in the cached list but never reach the model: it sees
    exactly the edges of a fresh list at r_max, and the same energy and forces."""
    atoms = read_molecule("3bpa")
    calc = MACECalculator(model, skin=2.0)
    seen = []
    forward = type(calc.model).forward

    def spy(self, graph, *args, **kwargs):
        seen.append(graph["edge_index"].shape[1])
        return forward(self, graph, *args, **kwargs)

    monkeypatch.setattr(type(calc.model), "forward", spy)
    atoms.calc = calc
    atoms.positions[0] += [0.1, 0.0, 0.0]
    forces = atoms.get_forces()
    fresh = graph(atoms, r_max=5.0)
    assert calc._graph.edge_index.shape[1] > fresh.edge_index.shape[1]  # the skin's edges
    assert seen == [fresh.edge_index.shape[1]]
    expected = forward(model, batch([atoms]))
    assert atoms.get_potential_energy() == pytest.approx(
        float(expected["energy"][0].detach()), abs=1e-12
    )
    assert relative_error(forces, expected["forces"]) < 1e-13


def _water() -> Atoms:
    return Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


def test_coincident_atoms_are_an_error_naming_them_not_nan(model):
    """Two atoms at one position: without the check the model returns NaN energies and
    forces (the direction of a zero-length edge is undefined); the calculator refuses."""
    atoms = _water()
    atoms.positions[2] = atoms.positions[1]
    unchecked = atoms.copy()
    unchecked.calc = MACECalculator(model, min_distance=0)
    assert not np.isfinite(unchecked.get_potential_energy())
    atoms.calc = MACECalculator(model)
    with pytest.raises(AtomsTooCloseError, match=r"atoms 1 and 2 \(H and H\) are at") as info:
        atoms.get_potential_energy()
    assert info.value.pair[:2] == (1, 2) and "min_distance=0.3" in str(info.value)


def test_atoms_moved_too_close_on_a_reused_neighbour_list(model):
    """The skin keeps the neighbour list across small moves; the distance check still sees
    atoms that have come too close since it was built."""
    atoms = _water()
    atoms.calc = MACECalculator(model, min_distance=0.9, skin=1.0)
    assert np.isfinite(atoms.get_potential_energy())
    atoms.positions[1, 0] -= 0.1  # the O-H bond shrinks to 0.86 Å, less than skin / 2 moved
    with pytest.raises(AtomsTooCloseError, match=r"atoms 0 and 1 .O and H. are 0\.86 Å apart"):
        atoms.get_potential_energy()
    assert atoms.calc.neighbour_list_builds == 1
