"""The LAMMPS ML-IAP route without LAMMPS: ``python -m macelab.export format=mace_torch``,
then mace-torch's ``create_lammps_model --format mliap`` (the route mace-torch recommends,
``pair_style mliap unified``), and the resulting object driven the way LAMMPS drives it.

No LAMMPS with ML-IAP + Python support installs here (docs/use.md says what was tried), so
:class:`MLIAPDataStandIn` plays LAMMPS's part for one periodic cell: local atoms and ghost
atoms (periodic images of local atoms within the cutoff), a full neighbour list of the local
atoms with ``rij = x_j - x_i``, the forward and reverse communication that copies features
to ghosts and adds ghost gradients back to their owners, and the force update of LAMMPS's
``update_pair_forces`` (``f_i += f_ij``, ``f_j -= f_ij``; ghost forces then go to their
owners). Energies and forces must equal macelab's model on the same cell. The model has the
MACE-MP-0b blocks (ZBL repulsion, Agnesi transform), on a compressed cell where the ZBL term
is not zero. mace-torch computes the ZBL prefactor ``k_e Z_i Z_j`` in torch's default dtype,
so a float64 model matches to rounding only under a float64 default (under float32: 1e-9
eV/Å here); neither LAMMPS's ML-IAP loader nor mace-torch's wrapper sets a float64 default.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from macelab import export
from tests.model.helpers import batch, default_dtype, silicon_cell, small_model

ELEMENTS = [1, 6, 8, 14]
E0 = [-13.6, -1029.0, -2041.0, -7800.0]


class MLIAPDataStandIn:
    """What LAMMPS's ML-IAP ``unified`` interface hands a model, for one ASE cell."""

    def __init__(self, atoms, r_max: float) -> None:
        from ase.neighborlist import primitive_neighbor_list

        i, j, shifts = primitive_neighbor_list(
            "ijS", atoms.pbc, atoms.cell.array, atoms.positions, r_max
        )
        n = len(atoms)
        ghost_of: dict[tuple, int] = {}
        owners: list[int] = []
        neighbour = np.empty(len(i), dtype=np.int32)
        for k, (atom, shift) in enumerate(zip(j, map(tuple, shifts), strict=True)):
            if shift == (0, 0, 0):
                neighbour[k] = atom
                continue
            if (atom, shift) not in ghost_of:
                ghost_of[(atom, shift)] = n + len(owners)
                owners.append(int(atom))
            neighbour[k] = ghost_of[(atom, shift)]
        species = np.array([ELEMENTS.index(z) for z in atoms.numbers])
        self.owner = torch.tensor(owners, dtype=torch.int64)  # [n_ghosts]
        self.nlocal, self.ntotal, self.npairs = n, n + len(owners), len(i)
        self.elems = np.concatenate([species, species[owners]]).astype(np.int32)  # [ntotal]
        self.pair_i, self.pair_j = i.astype(np.int32), neighbour  # [npairs]
        self.rij = atoms.positions[j] + shifts @ atoms.cell.array - atoms.positions[i]
        self.eatoms = np.zeros(n)  # written by the model
        self.energy = 0.0
        self.forces: torch.Tensor | None = None

    def forward_exchange(self, features, out, vec_len) -> None:  # ghosts get their owner's
        out[: self.nlocal] = features[: self.nlocal]
        out[self.nlocal :] = features[self.owner]

    def reverse_exchange(self, grad, out, vec_len) -> None:  # ghost gradients to the owners
        out.copy_(grad)
        out[: self.nlocal].index_add_(0, self.owner, grad[self.nlocal :])
        out[self.nlocal :] = 0

    def update_pair_forces_gpu(self, fij: torch.Tensor) -> None:
        forces = torch.zeros(self.ntotal, 3, dtype=fij.dtype)
        forces.index_add_(0, torch.as_tensor(self.pair_i, dtype=torch.int64), fij)
        forces.index_add_(0, torch.as_tensor(self.pair_j, dtype=torch.int64), -fij)
        local = forces[: self.nlocal].clone()
        self.forces = local.index_add_(0, self.owner, forces[self.nlocal :])


@pytest.mark.mace_torch
@pytest.mark.slow
def test_mliap_export_of_a_macelab_model(tmp_path):
    pytest.importorskip("mace.calculators")
    pytest.importorskip("cuequivariance_torch")  # --format mliap converts to cuEquivariance
    model = small_model(
        seed=3, atomic_numbers=ELEMENTS, atomic_energies=E0, channels=4, max_L=1, max_ell=2,
        correlation=2, radial_mlp=[8], pair_repulsion=True, distance_transform="agnesi",
    ).eval()  # fmt: skip
    path = export.export_mace_torch(model, tmp_path / "model.model")
    result = subprocess.run(
        [sys.executable, "-m", "mace.cli.create_lammps_model", str(path), "--format", "mliap"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # our own file, just written: a pickle of mace-torch's LAMMPS_MLIAP_MACE
    mliap = torch.load(str(path) + "-mliap_lammps.pt", weights_only=False)
    atoms = silicon_cell(seed=2)
    atoms.set_cell(atoms.cell.array * 0.85, scale_atoms=True)  # pairs inside the ZBL radii
    data = MLIAPDataStandIn(atoms, model.r_max)
    assert data.ntotal > data.nlocal  # ghost atoms take part
    with default_dtype(torch.float64):  # mace-torch computes Z_i Z_j k_e of ZBL in it
        mliap.compute_forces(data)
    reference = model(batch([atoms], r_max=model.r_max), compute_forces=True)
    assert data.energy == pytest.approx(float(reference["energy"][0].detach()), rel=0, abs=1e-9)
    assert data.eatoms.sum() == pytest.approx(data.energy, rel=0, abs=1e-9)
    torch.testing.assert_close(data.forces, reference["forces"], rtol=0, atol=1e-12)
