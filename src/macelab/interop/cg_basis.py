"""Translate product-basis weights between two generalised Clebsch-Gordan bases.

A contraction of order nu computes ``sum_p W[z, p, k] <U[..., p], A_k x ... x A_k>`` (Eq.
10-11). Two implementations may use different bases U (different order, signs or
normalisation of the coupling trees, or a reduced basis). Only the part of U symmetric in
its nu input axes acts on ``A x ... x A``, so weights translate through a linear map T with

    symmetrise(U_to) T = symmetrise(U_from),   W_to = T W_from.

When the full (unsymmetrised) bases span each other, T is found on the full tensors (then it
is unique: a signed permutation between mace-torch's trees and ours); otherwise it is the
least-squares solution on the symmetric parts. Either way the residual is checked and a
basis that cannot represent the other raises instead of silently changing the model.
"""

from __future__ import annotations

import math

import torch

from macelab.errors import MacelabError
from macelab.model.clebsch_gordan import symmetrise

F64 = torch.float64


class BasisMismatchError(MacelabError, ValueError):
    """The target basis cannot represent the source contraction exactly."""


def _tolerance(*tensors: torch.Tensor) -> float:
    """Relative residual accepted: rounding of the least precise input, at least 1e-10."""
    eps = max(torch.finfo(t.dtype).eps for t in tensors)
    return max(1e-10, 1e3 * eps)


def _solve(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Least-squares (minimum-norm) T with ``A T ~ B``, and the relative residual."""
    if B.shape[1] == 0 or float(B.norm()) == 0.0:
        return A.new_zeros(A.shape[1], B.shape[1]), 0.0
    if A.shape[1] == 0:
        return A.new_zeros(0, B.shape[1]), 1.0
    T = torch.linalg.lstsq(A, B, driver="gelsd").solution
    return T, float((A @ T - B).norm() / B.norm())


def translate_path_weights(
    U_from: torch.Tensor, W_from: torch.Tensor, U_to: torch.Tensor
) -> torch.Tensor:
    """Weights for basis ``U_to`` that reproduce ``(U_from, W_from)``.

    Args:
        U_from: ``[2L+1, K, ..., K, P_from]`` source basis (nu axes of size K).
        W_from: ``[n_elements, P_from, channels]`` source weights.
        U_to: ``[2L+1, K, ..., K, P_to]`` target basis.

    Returns:
        ``[n_elements, P_to, channels]`` float64.

    Raises:
        BasisMismatchError: the residual of the translation exceeds rounding.
    """
    tolerance = _tolerance(U_from, U_to)
    rows = math.prod(U_from.shape[:-1])
    if math.prod(U_to.shape[:-1]) != rows:
        raise BasisMismatchError(
            f"the bases have different shapes {tuple(U_from.shape)} and {tuple(U_to.shape)}"
        )
    U_from, U_to, W_from = U_from.to(F64), U_to.to(F64), W_from.to(F64)
    T, residual = _solve(U_to.reshape(rows, -1), U_from.reshape(rows, -1))
    if residual > tolerance:
        S_from, S_to = symmetrise(U_from), symmetrise(U_to)
        T, residual = _solve(S_to.reshape(rows, -1), S_from.reshape(rows, -1))
        if residual > tolerance:
            raise BasisMismatchError(
                f"the target basis ({U_to.shape[-1]} paths) does not span the source basis "
                f"({U_from.shape[-1]} paths) on symmetric tensors: relative residual "
                f"{residual:.2e} > {tolerance:.0e}"
            )
    return torch.einsum("qp,epc->eqc", T, W_from)
