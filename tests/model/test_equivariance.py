"""E(3) symmetry of the model on real molecules and a periodic cell (float64).

Energies are invariant and forces, stress and hidden features equivariant under rotations,
reflections (improper rotations), translations and permutations of the atoms, to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from macelab.model import MACE

from .helpers import (
    batch,
    graph,
    random_orthogonal,
    read_molecule,
    relative_error,
    silicon_cell,
    small_model,
)

TOL = 1e-11


@pytest.fixture(scope="module")
def model() -> MACE:
    return small_model()


@pytest.fixture(scope="module")
def reduced_model() -> MACE:
    return small_model(seed=1, reduced_cg=True, interaction_first="plain")


def _predict(model: MACE, atoms: Atoms, stress: bool = False) -> dict[str, torch.Tensor]:
    out = model(batch([atoms]), compute_forces=True, compute_stress=stress)
    return {k: v.detach() for k, v in out.items() if v is not None}


def _transformed(atoms: Atoms, rotation: np.ndarray, translation: np.ndarray) -> Atoms:
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + translation
    if atoms.pbc.any():
        moved.cell = atoms.cell.array @ rotation.T
    return moved


@pytest.mark.parametrize("molecule", ["3bpa", "acac", "ethanol"])
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "improper"])
def test_energy_invariant_forces_equivariant(model, molecule, reflect):
    atoms = read_molecule(molecule, index=3)
    rotation = random_orthogonal(seed=len(molecule), reflect=reflect)
    translation = np.array([3.1, -7.2, 0.4])
    reference = _predict(model, atoms)
    moved = _predict(model, _transformed(atoms, rotation, translation))
    assert relative_error(moved["energy"], reference["energy"]) < TOL
    assert relative_error(moved["forces"], reference["forces"] @ rotation.T) < TOL
    assert relative_error(moved["node_energy"], reference["node_energy"]) < TOL


@pytest.mark.parametrize("molecule", ["3bpa", "acac"])
def test_permutation(model, reduced_model, molecule):
    atoms = read_molecule(molecule, index=5)
    permutation = np.random.default_rng(7).permutation(len(atoms))
    for m in (model, reduced_model):
        reference = _predict(m, atoms)
        permuted = _predict(m, atoms[permutation])
        assert relative_error(permuted["energy"], reference["energy"]) < TOL
        assert relative_error(permuted["forces"], reference["forces"][permutation]) < TOL
        assert relative_error(permuted["node_energy"], reference["node_energy"][permutation]) < TOL


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "improper"])
def test_stress_equivariant_periodic(model, reflect):
    atoms = silicon_cell()
    rotation = random_orthogonal(seed=11, reflect=reflect)
    reference = _predict(model, atoms, stress=True)
    moved = _predict(model, _transformed(atoms, rotation, np.array([0.3, 1.1, -2.0])), stress=True)
    assert float(reference["stress"].abs().max()) > 1e-4  # a stress that can rotate
    assert relative_error(moved["energy"], reference["energy"]) < TOL
    assert relative_error(moved["forces"], reference["forces"] @ rotation.T) < TOL
    expected = rotation @ reference["stress"][0].numpy() @ rotation.T
    assert relative_error(moved["stress"][0], expected) < TOL


def test_periodic_image_invariance(model):
    """Wrapping atoms into the cell, or choosing another cell basis, changes nothing."""
    atoms = silicon_cell()
    shifted = atoms.copy()
    shifted.positions += atoms.cell.array[0] * 1.0 + atoms.cell.array[2] * -1.0
    other_basis = atoms.copy()
    other_basis.set_cell(
        np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]) @ atoms.cell.array, scale_atoms=False
    )
    reference = _predict(model, atoms, stress=True)
    for variant in (shifted, other_basis):
        out = _predict(model, variant, stress=True)
        assert relative_error(out["energy"], reference["energy"]) < TOL
        assert relative_error(out["forces"], reference["forces"]) < TOL
        assert relative_error(out["stress"], reference["stress"]) < TOL


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "improper"])
def test_hidden_features_equivariant(reduced_model, reflect):
    """The L = 1, 2 features of the first layer transform with their Wigner D matrices
    (parity included), so kernels that replace a stage can be checked feature by feature."""
    atoms = read_molecule("acac", index=1)
    rotation = random_orthogonal(seed=5, reflect=reflect)
    captured: list[torch.Tensor] = []
    hook = reduced_model.products[0].register_forward_hook(
        lambda module, args, output: captured.append(output.detach())
    )
    try:
        reduced_model(graph(atoms), compute_forces=False)
        reduced_model(graph(_transformed(atoms, rotation, np.zeros(3))), compute_forces=False)
    finally:
        hook.remove()
    irreps = reduced_model.hidden_irreps
    assert irreps.lmax == 2
    D = irreps.D_from_matrix(torch.as_tensor(rotation))
    assert relative_error(captured[1], captured[0] @ D.T) < TOL
