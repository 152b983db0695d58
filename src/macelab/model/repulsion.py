"""A fixed short-range pair repulsion: the Ziegler-Biersack-Littmark (ZBL) screened Coulomb
potential, as in mace-torch's ``pair_repulsion=True`` models (the MACE-MP-0b family).

Learned potentials see few structures with atoms much closer than a bond, and can turn
attractive there. A ZBL term adds the physics of that regime: the Coulomb repulsion of two
nuclei, screened by their electrons (Ziegler, Biersack and Littmark, *The Stopping and Range
of Ions in Solids*, 1985), switched off smoothly at the sum of the covalent radii. Per atom,

    E_i^ZBL = 1/2 sum_j  k_e Z_i Z_j / r_ij  phi(r_ij / a_ij)  u_p(r_ij / (R_zi + R_zj))

    phi(x) = 0.1818 e^(-3.2 x) + 0.5099 e^(-0.9423 x) + 0.2802 e^(-0.4028 x)
             + 0.02817 e^(-0.2016 x)
    a_ij   = 0.4543 a_0 / (Z_i^0.3 + Z_j^0.3),   a_0 = 0.529 Å,   k_e = 14.3996 eV Å

with ``u_p`` the polynomial envelope of the radial basis (same ``p``) and ``R_z`` ASE's
covalent radii. The screening length uses mace-torch's constants (0.4543 and 0.3, not the
universal ZBL's 0.8854 and 0.23); the sum runs over the edges of the model's neighbour list
(each pair twice, hence the 1/2). The term has no parameters. In a ``ScaleShiftMACE`` it is
added to the per-atom interaction energies *before* the scale and shift, as mace-torch does.
"""

from __future__ import annotations

import torch

from macelab.model.radial import covalent_radii, edge_elements, polynomial_envelope

PHI_COEFFICIENTS = (0.1818, 0.5099, 0.2802, 0.02817)
PHI_EXPONENTS = (3.2, 0.9423, 0.4028, 0.2016)
SCREENING_PREFACTOR = 0.4543
SCREENING_EXPONENT = 0.300
BOHR_RADIUS_A = 0.529
COULOMB_EV_A = 14.3996  # e^2 / (4 pi eps_0) in eV Å


class ZBLRepulsion(torch.nn.Module):
    """The "pair_repulsion" stage: ``E_i^ZBL`` (module docstring) of every atom, ``[n_atoms]``.

    Args:
        p: order of the polynomial envelope (the model's ``num_polynomial_cutoff``).
    """

    def __init__(self, p: int) -> None:
        super().__init__()
        self.p = int(p)
        self.register_buffer("covalent_radii", covalent_radii(), persistent=False)  # [119]

    def forward(
        self,
        lengths: torch.Tensor,  # [n_edges, 1], Å
        atomic_numbers: torch.Tensor,  # [n_atoms] int64
        edge_index: torch.Tensor,  # [2, n_edges] (sender j, receiver i)
    ) -> torch.Tensor:
        z_j, z_i = edge_elements(atomic_numbers, edge_index)  # [n_edges, 1] int64
        charge_j, charge_i = z_j.to(lengths.dtype), z_i.to(lengths.dtype)
        screening = (
            SCREENING_PREFACTOR
            * BOHR_RADIUS_A
            / (torch.pow(charge_j, SCREENING_EXPONENT) + torch.pow(charge_i, SCREENING_EXPONENT))
        )  # a_ij: [n_edges, 1]
        x = lengths / screening
        phi = sum(
            c * torch.exp(-d * x) for c, d in zip(PHI_COEFFICIENTS, PHI_EXPONENTS, strict=True)
        )
        energy = (COULOMB_EV_A * charge_j * charge_i) / lengths * phi  # [n_edges, 1]
        pair_cutoff = self.covalent_radii[z_j] + self.covalent_radii[z_i]  # R_zj + R_zi
        edge_energy = 0.5 * energy * polynomial_envelope(lengths, pair_cutoff, self.p)
        node_energy = edge_energy.new_zeros(atomic_numbers.shape[0], 1)
        return node_energy.index_add(0, edge_index[1], edge_energy).squeeze(-1)  # [n_atoms]

    def extra_repr(self) -> str:
        return f"p={self.p}"
