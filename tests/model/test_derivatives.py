"""Forces and stress are the derivatives of the energy; the energy is smooth at r_max."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from macelab.model import MACE

from .helpers import batch, read_molecule, relative_error, silicon_cell, small_model


@pytest.fixture(scope="module")
def model() -> MACE:
    return small_model(seed=3)


def _energy(model: MACE, atoms: Atoms) -> float:
    return float(model(batch([atoms]), compute_forces=False)["energy"].detach())


def test_forces_are_minus_energy_gradient(model):
    """Central finite differences (h = 1e-5 Å) of the energy on 3BPA (27 atoms)."""
    atoms = read_molecule("3bpa", index=2)
    forces = model(batch([atoms]), compute_forces=True)["forces"].detach().numpy()
    h = 1e-5
    rng = np.random.default_rng(0)
    atoms_and_axes = zip(
        rng.choice(len(atoms), 8, replace=False), rng.integers(0, 3, 8), strict=True
    )
    for atom, axis in atoms_and_axes:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        numerical = -(_energy(model, plus) - _energy(model, minus)) / (2 * h)
        assert abs(numerical - forces[atom, axis]) < 1e-6 * max(1.0, abs(forces[atom, axis]))


def test_stress_is_strain_derivative(model):
    """sigma = (1/V) dE/d(eps) for a symmetric strain of positions and cell (ASE sign)."""
    atoms = silicon_cell(seed=2)
    stress = model(batch([atoms]), compute_stress=True)["stress"][0].detach().numpy()
    volume = atoms.get_volume()
    h = 1e-5
    for i, j in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]:
        values = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * h / (2 if i != j else 1)
            strain[j, i] += sign * h / 2 if i != j else 0.0
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            values.append(_energy(model, strained))
        numerical = (values[0] - values[1]) / (2 * h) / volume
        assert abs(numerical - stress[i, j]) < 1e-7 + 1e-6 * abs(stress[i, j])


def test_stress_of_molecules_is_zero_and_virials_finite(model):
    atoms = read_molecule("ethanol")
    out = model(batch([atoms]), compute_stress=True)
    assert torch.equal(out["stress"], torch.zeros(1, 3, 3))
    assert torch.isfinite(out["virials"]).all()


def test_energy_smooth_across_cutoff(model):
    """An O atom moving radially away from a C atom through r_max: value and slope of the
    energy reach the same limits from both sides (the envelope has p = 5)."""
    r_max = model.r_max

    def energy_and_slope(r: float) -> tuple[float, float]:
        atoms = Atoms("COH", positions=[[0, 0, 0], [r, 0, 0], [-1.1, 0.3, 0.0]])
        out = model(batch([atoms]), compute_forces=True)
        return float(out["energy"].detach()), -float(out["forces"][1, 0])  # dE/dr of O

    inside_e, inside_slope = energy_and_slope(r_max - 1e-4)
    outside_e, outside_slope = energy_and_slope(r_max + 1e-4)
    far_e, _ = energy_and_slope(r_max + 1.0)
    near_e, near_slope = energy_and_slope(r_max - 1.5)
    assert abs(near_e - far_e) > 1e-5 and abs(near_slope) > 1e-5  # the pair does interact
    assert outside_e == pytest.approx(far_e, abs=1e-12)  # beyond r_max: no interaction
    assert outside_slope == pytest.approx(0.0, abs=1e-12)
    assert abs(inside_e - outside_e) < 1e-9  # value continuous
    assert abs(inside_slope - outside_slope) < 1e-6  # slope continuous


@pytest.mark.parametrize("training", [False, True])
def test_forces_graph_only_when_training(model, training):
    """training=True keeps the derivative's graph (a force loss can be backpropagated)."""
    atoms = read_molecule("ethanol")
    out = model(batch([atoms]), compute_forces=True, training=training)
    assert out["forces"].requires_grad == training
    if training:
        out["forces"].square().sum().backward()
        gradient = model.interactions[0].radial_mlp.layer0.weight.grad
        assert gradient is not None and float(gradient.abs().max()) > 0
        model.zero_grad()


def test_forces_under_no_grad(model):
    """Validation loops run under torch.no_grad; forces still come from autograd."""
    atoms = read_molecule("ethanol")
    reference = model(batch([atoms]))["forces"]
    with torch.no_grad():
        out = model(batch([atoms]))
    assert relative_error(out["forces"], reference) < 1e-14
