"""Forces, virials and stress as exact derivatives of the energy (autograd).

Forces are ``F_i = -dE/dr_i``. For the stress, the positions and the cell are strained by a
symmetric displacement ``eps`` before the edges are computed (Nielsen & Martin's virial via
autograd, as in NequIP and mace-torch):

    r_i -> r_i (1 + eps),  cell -> cell (1 + eps),   virial W = -dE/d eps,
    stress sigma = -W / V = (1/V) dE/d eps   (ASE's sign convention: positive = tensile).

Graphs without a volume (molecules) get zero stress.
"""

from __future__ import annotations

import torch


def symmetric_displacement(
    positions: torch.Tensor,  # [n_atoms, 3]
    cell: torch.Tensor,  # [n_graphs, 3, 3]
    batch: torch.Tensor,  # [n_atoms]
    num_graphs: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Strain positions and cells by a zero displacement that autograd can differentiate.

    Returns the strained positions, the strained cells and the displacement ``eps``
    ``[n_graphs, 3, 3]`` (zeros, ``requires_grad``).
    """
    displacement = torch.zeros(
        num_graphs, 3, 3, dtype=positions.dtype, device=positions.device, requires_grad=True
    )
    symmetric = 0.5 * (displacement + displacement.transpose(-1, -2))
    positions = positions + torch.einsum("ni,nij->nj", positions, symmetric[batch])
    cell = cell + torch.matmul(cell, symmetric)
    return positions, cell, displacement


def forces_and_stress(
    energy: torch.Tensor,  # [n_graphs]
    positions: torch.Tensor,  # [n_atoms, 3], requires_grad
    displacement: torch.Tensor | None,  # [n_graphs, 3, 3] or None (no stress)
    cell: torch.Tensor,  # [n_graphs, 3, 3], unstrained
    training: bool,
) -> dict[str, torch.Tensor | None]:
    """``forces`` ``[n_atoms, 3]``, and ``virials``/``stress`` ``[n_graphs, 3, 3]`` if a
    displacement is given (else None). With ``training`` the derivatives keep their graph
    (``create_graph``) so that a loss on forces can be backpropagated."""
    inputs = [positions] if displacement is None else [positions, displacement]
    gradients = torch.autograd.grad(
        outputs=[energy],
        inputs=inputs,
        grad_outputs=[torch.ones_like(energy)],
        retain_graph=training,
        create_graph=training,
        allow_unused=True,
    )
    forces = gradients[0]
    forces = torch.zeros_like(positions) if forces is None else -forces
    virials = stress = None
    if displacement is not None:
        d_energy = gradients[1]
        if d_energy is None:
            d_energy = torch.zeros_like(displacement)
        virials = -d_energy
        volume = torch.linalg.det(cell).abs().reshape(-1, 1, 1)  # [n_graphs, 1, 1]
        has_volume = volume > 0
        stress = torch.where(has_volume, d_energy / torch.where(has_volume, volume, 1.0), 0.0)
    return {"forces": forces, "virials": virials, "stress": stress}
