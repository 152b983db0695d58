"""Radial features of an edge: Bessel basis times a polynomial cutoff, and the radial MLP.

The radial part ``R_{kl_1l_2l_3}(r_ji)`` of the one-particle basis (Eq. 8) is a learnable
function of the distance: a multilayer perceptron applied to ``num_bessel`` Bessel functions

    b_n(r) = sqrt(2 / r_max) sin(n pi r / r_max) / r,   n = 1 .. num_bessel

multiplied by a smooth envelope that takes the interaction to zero at ``r_max`` with ``p``
continuous derivatives (the polynomial cutoff of DimeNet, Klicpera et al. 2020, with
``p = num_polynomial_cutoff``):

    u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2),   x = r / r_max < 1.

By default (mace-torch's ``apply_cutoff=True``) the envelope multiplies the basis before the
MLP; with ``apply_cutoff=False`` it multiplies the MLP's output instead.

Optionally (``distance_transform``, the MACE-MP-0b family) the Bessel functions are evaluated
at a transformed distance ``T(r_ji)`` that depends on the two elements through their covalent
radii ``R_z`` (ASE's table), while the envelope stays a function of ``r_ji`` itself:

- ``agnesi`` (ACEpotentials.jl, Witt et al., J. Chem. Phys. 159, 164101 (2023), "radial
  transforms"), with ``r_0 = (R_zi + R_zj) / 2``::

      T(r) = 1 / (1 + a (r/r_0)^q / (1 + (r/r_0)^(q-p))),   a = 1.0805, q = 0.9183, p = 4.5791

- ``soft``, a tanh switch from a floor ``p_0`` to the identity, with ``r_0 = R_zi + R_zj``,
  ``p_0 = 3 r_0 / 4``, ``p_1 = 4 r_0 / 3``, ``m = (p_0 + p_1) / 2``::

      T(r) = p_0 + (r - p_0) (1 + tanh(alpha (r - m) / (p_1 - p_0))) / 2,   alpha = 4

The constants are mace-torch's (its ``AgnesiTransform`` and ``SoftTransform``, which it never
trains in ``MACE``), so converted models compute the same function.
"""

from __future__ import annotations

import math

import ase.data
import torch
from e3nn import nn as e3nn_nn

DISTANCE_TRANSFORMS = ("none", "agnesi", "soft")
AGNESI = {"a": 1.0805, "q": 0.9183, "p": 4.5791}
SOFT_ALPHA = 4.0


class BesselBasis(torch.nn.Module):
    """``[n_edges, 1]`` lengths -> ``[n_edges, num_bessel]`` Bessel functions (fixed)."""

    def __init__(self, r_max: float, num_bessel: int) -> None:
        super().__init__()
        self.r_max = float(r_max)
        self.num_bessel = int(num_bessel)
        dtype = torch.get_default_dtype()
        frequencies = math.pi / r_max * torch.arange(1, num_bessel + 1, dtype=dtype)
        self.register_buffer("frequencies", frequencies)  # n pi / r_max
        self.register_buffer("prefactor", torch.tensor(math.sqrt(2.0 / r_max), dtype=dtype))

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.prefactor * torch.sin(self.frequencies * lengths) / lengths

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, num_bessel={self.num_bessel}"


def polynomial_envelope(lengths: torch.Tensor, r_max: float | torch.Tensor, p: int) -> torch.Tensor:
    """``u(r / r_max)`` (module docstring), 0 from ``r_max`` on; ``r_max`` a number or a
    tensor that broadcasts with ``lengths`` (a cutoff per edge, as ZBL's)."""
    x = lengths / r_max
    envelope = (
        1.0
        - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(x, p)
        + p * (p + 2.0) * torch.pow(x, p + 1)
        - p * (p + 1.0) / 2.0 * torch.pow(x, p + 2)
    )
    return envelope * (lengths < r_max)


def covalent_radii() -> torch.Tensor:
    """ASE's covalent radii (Å) indexed by atomic number, ``[119]``, in the default dtype."""
    return torch.tensor(ase.data.covalent_radii, dtype=torch.get_default_dtype())


def edge_elements(
    atomic_numbers: torch.Tensor, edge_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Atomic numbers of the sender and receiver of every edge, ``[n_edges, 1]`` each."""
    z = atomic_numbers.unsqueeze(-1)  # [n_atoms, 1]
    return z[edge_index[0]], z[edge_index[1]]


class PolynomialCutoff(torch.nn.Module):
    """The envelope ``u(r / r_max)`` above, ``[n_edges, 1]``; exactly 0 beyond ``r_max``."""

    def __init__(self, r_max: float, p: int) -> None:
        super().__init__()
        self.r_max = float(r_max)
        self.p = int(p)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        return polynomial_envelope(lengths, self.r_max, self.p)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, p={self.p}"


class AgnesiTransform(torch.nn.Module):
    """``T(r)`` of the Agnesi transform (module docstring), ``[n_edges, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.q, self.p = AGNESI["a"], AGNESI["q"], AGNESI["p"]
        # constants of the element pair, rebuilt from ASE's table (not saved)
        self.register_buffer("covalent_radii", covalent_radii(), persistent=False)  # [119]

    def forward(
        self, lengths: torch.Tensor, atomic_numbers: torch.Tensor, edge_index: torch.Tensor
    ) -> torch.Tensor:
        z_sender, z_receiver = edge_elements(atomic_numbers, edge_index)  # [n_edges, 1]
        r_0 = 0.5 * (self.covalent_radii[z_sender] + self.covalent_radii[z_receiver])
        x = lengths / r_0
        return torch.reciprocal(
            1 + self.a * torch.pow(x, self.q) / (1 + torch.pow(x, self.q - self.p))
        )

    def extra_repr(self) -> str:
        return f"a={self.a}, q={self.q}, p={self.p}"


class SoftTransform(torch.nn.Module):
    """``T(r)`` of the soft (tanh) transform (module docstring), ``[n_edges, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = SOFT_ALPHA
        self.register_buffer("covalent_radii", covalent_radii(), persistent=False)  # [119]

    def forward(
        self, lengths: torch.Tensor, atomic_numbers: torch.Tensor, edge_index: torch.Tensor
    ) -> torch.Tensor:
        z_sender, z_receiver = edge_elements(atomic_numbers, edge_index)  # [n_edges, 1]
        r_0 = self.covalent_radii[z_sender] + self.covalent_radii[z_receiver]
        p_0, p_1 = (3 / 4) * r_0, (4 / 3) * r_0
        middle = 0.5 * (p_0 + p_1)
        switch = 0.5 * (1.0 + torch.tanh(self.alpha / (p_1 - p_0) * (lengths - middle)))
        return p_0 + (lengths - p_0) * switch

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class RadialEmbedding(torch.nn.Module):
    """The "radial" stage: Bessel basis and envelope of every edge.

    Returns ``(features [n_edges, num_bessel], envelope [n_edges, 1])``; ``features`` already
    carries the envelope when ``apply_cutoff`` is true (then the interactions ignore
    ``envelope``). With a ``distance_transform`` the basis is evaluated at ``T(r)`` and the
    envelope at ``r``; the transform needs the atomic numbers and the edges.
    """

    def __init__(
        self,
        r_max: float,
        num_bessel: int,
        num_polynomial_cutoff: int,
        apply_cutoff: bool = True,
        distance_transform: str = "none",
    ) -> None:
        super().__init__()
        if distance_transform not in DISTANCE_TRANSFORMS:
            raise ValueError(
                f"distance_transform must be one of {', '.join(DISTANCE_TRANSFORMS)}, "
                f"got {distance_transform!r}"
            )
        self.bessel = BesselBasis(r_max, num_bessel)
        self.cutoff = PolynomialCutoff(r_max, num_polynomial_cutoff)
        self.apply_cutoff = bool(apply_cutoff)
        transforms = {"agnesi": AgnesiTransform, "soft": SoftTransform}
        self.transform = (
            transforms[distance_transform]() if distance_transform in transforms else None
        )

    def forward(
        self,
        lengths: torch.Tensor,  # [n_edges, 1]
        atomic_numbers: torch.Tensor | None = None,  # [n_atoms], with a transform only
        edge_index: torch.Tensor | None = None,  # [2, n_edges], with a transform only
    ) -> tuple[torch.Tensor, torch.Tensor]:
        envelope = self.cutoff(lengths)  # [n_edges, 1], of the true distance
        if self.transform is not None:
            lengths = self.transform(lengths, atomic_numbers, edge_index)  # T(r): [n_edges, 1]
        basis = self.bessel(lengths)  # [n_edges, num_bessel]
        if self.apply_cutoff:
            basis = basis * envelope
        return basis, envelope


def radial_mlp(num_bessel: int, hidden: list[int], num_weights: int) -> e3nn_nn.FullyConnectedNet:
    """The MLP ``R(r_ji)`` giving one weight per channel and tensor-product path per edge.

    e3nn's ``FullyConnectedNet`` ``[num_bessel] + hidden + [num_weights]``: SiLU (normalised
    to unit second moment), no biases, so ``R = 0`` wherever the envelope is 0.
    """
    return e3nn_nn.FullyConnectedNet([num_bessel, *hidden, num_weights], torch.nn.functional.silu)
