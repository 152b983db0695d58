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
"""

from __future__ import annotations

import math

import torch
from e3nn import nn as e3nn_nn


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


class PolynomialCutoff(torch.nn.Module):
    """The envelope ``u(r / r_max)`` above, ``[n_edges, 1]``; exactly 0 beyond ``r_max``."""

    def __init__(self, r_max: float, p: int) -> None:
        super().__init__()
        self.r_max = float(r_max)
        self.p = int(p)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = lengths / self.r_max
        envelope = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(x, p)
            + p * (p + 2.0) * torch.pow(x, p + 1)
            - p * (p + 1.0) / 2.0 * torch.pow(x, p + 2)
        )
        return envelope * (lengths < self.r_max)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, p={self.p}"


class RadialEmbedding(torch.nn.Module):
    """The "radial" stage: Bessel basis and envelope of every edge.

    Returns ``(features [n_edges, num_bessel], envelope [n_edges, 1])``; ``features`` already
    carries the envelope when ``apply_cutoff`` is true (then the interactions ignore
    ``envelope``).
    """

    def __init__(
        self, r_max: float, num_bessel: int, num_polynomial_cutoff: int, apply_cutoff: bool = True
    ) -> None:
        super().__init__()
        self.bessel = BesselBasis(r_max, num_bessel)
        self.cutoff = PolynomialCutoff(r_max, num_polynomial_cutoff)
        self.apply_cutoff = bool(apply_cutoff)

    def forward(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        envelope = self.cutoff(lengths)  # [n_edges, 1]
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
