"""Edge geometry: vectors, lengths and spherical harmonics of ``r_ji`` (inputs of Eq. 8).

The edge vectors are recomputed from ``positions`` and the cell in every forward pass (never
read from the graph), so that forces ``-dE/dr`` and the stress (through a strain of
positions and cell, :mod:`macelab.model.outputs`) are exact derivatives of the energy.
Convention (``docs/design.md``): edge ``(j, i)`` with integer cell shift ``S`` has

    r_ji = positions[i] - positions[j] + S @ cell,    i = receiver, j = sender.
"""

from __future__ import annotations

import torch
from e3nn import o3

from macelab.model.irreps import sh_irreps


class EdgeGeometry(torch.nn.Module):
    """Edge vectors ``[n_edges, 3]`` and lengths ``[n_edges, 1]`` from positions and cells."""

    def forward(
        self,
        positions: torch.Tensor,  # [n_atoms, 3]
        edge_index: torch.Tensor,  # [2, n_edges] (sender, receiver)
        unit_shifts: torch.Tensor,  # [n_edges, 3]
        cell: torch.Tensor,  # [n_graphs, 3, 3], lattice vectors as rows
        batch: torch.Tensor,  # [n_atoms] graph of each atom
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sender, receiver = edge_index[0], edge_index[1]
        shifts = torch.einsum("ei,eij->ej", unit_shifts, cell[batch[sender]])  # [n_edges, 3]
        vectors = positions[receiver] - positions[sender] + shifts
        lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)
        return vectors, lengths


def spherical_harmonics(max_ell: int) -> o3.SphericalHarmonics:
    """``Y_lm(r_ji / |r_ji|)`` for ``l <= max_ell``, ``[n_edges, (max_ell+1)**2]``.

    Normalised direction and "component" normalisation (each ``Y_l`` has squared norm
    ``2l+1``), as in MACE.
    """
    return o3.SphericalHarmonics(sh_irreps(max_ell), normalize=True, normalization="component")
