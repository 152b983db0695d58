"""Generalised Clebsch-Gordan coefficients: the constants of the product basis (Eq. 10).

Eq. 10 of the paper builds the many-body features of atom ``i`` from its atomic basis A:

    B^{(nu)}_{i, eta k LM} = sum_{lm} C^{LM}_{eta, lm} prod_{xi=1..nu} A_{i, k l_xi m_xi}

with ``lm = (l_1 m_1, ..., l_nu m_nu)``. The generalised Clebsch-Gordan coefficients
``C^{LM}_{eta, lm}`` couple ``nu`` spherical tensors into one of degree ``L``. We build them
as *coupling trees*: couple the first two factors into an intermediate degree, that with the
third into the next, and so on until ``L``; ``eta`` enumerates the trees (the degrees
``l_1 .. l_nu`` and the intermediate irreps). Each step is e3nn's real Wigner 3j symbol in
"component" normalisation (times ``sqrt(2 L_mid + 1)``), so every tree has Frobenius norm
``sqrt(2L + 1)``; the symbols' signs are fixed by :func:`macelab._compat.wigner_3j`, so the
basis (and what trained weights mean) is the same under every e3nn release.

A basis is stored as one float64 tensor ``U`` of shape ``[2L+1, K, ..., K, n_paths]`` (``nu``
axes of size ``K = sum_l (2l+1)``, the components of all degrees of A, in the order of
``irreps_in``). Two bases are offered:

- :func:`coupling_trees` (``reduced_cg=False``, the default): one basis tensor per coupling
  tree. As only the part of U that is symmetric in its ``nu`` input axes acts on
  ``A x ... x A``, the trees are linearly dependent there (e.g. ``(l_1, l_2)`` and
  ``(l_2, l_1)`` give the same feature); the weights are over-parametrised, exactly as in
  mace-torch's default (``use_reduced_cg=False``), whose parameter count this matches.
- :func:`symmetric_basis` (``reduced_cg=True``): an orthonormal basis of the space of
  equivariant maps that are symmetric in their inputs, i.e. of the features the trees can
  produce, without redundancy (fewer weights, the same function class).

Both are computed once, at construction, by the functions here (our own code; mace-torch's
``U_matrix_real`` is only used by the tests and by :mod:`macelab.interop` to translate
weights).
"""

from __future__ import annotations

import itertools
import math

import torch
from e3nn import o3

from macelab._compat import wigner_3j

F64 = torch.float64


def _input_blocks(irreps_in: o3.Irreps) -> tuple[list[tuple[o3.Irrep, int]], int]:
    """Each input irrep with its offset in the ``K`` components, and ``K``."""
    blocks = []
    offset = 0
    for mul, ir in irreps_in:
        for _ in range(mul):
            blocks.append((ir, offset))
            offset += ir.dim
    return blocks, offset


def _couple(
    left: torch.Tensor, ir_left: o3.Irrep, ir_right: o3.Irrep, offset: int, ir_out: o3.Irrep, K: int
) -> torch.Tensor:
    """Couple ``left`` ``[2l_left+1, K**k, *rest]`` with input block ``ir_right`` into ``ir_out``.

    Returns ``[2l_out+1, K**(k+1), *rest]``: the new input axis is the last of the ``K`` axes.
    """
    cg = wigner_3j(ir_left.l, ir_right.l, ir_out.l, dtype=F64) * math.sqrt(ir_out.dim)
    rest = left.shape[2:]
    out = left.new_zeros((ir_out.dim, left.shape[1], K, *rest))
    # [dl, dr, dout] x [dl, K**k, *rest] -> [dout, K**k, dr, *rest]
    out[:, :, offset : offset + ir_right.dim] = torch.einsum("abm,ai...->mib...", cg, left)
    return out.reshape(ir_out.dim, left.shape[1] * K, *rest)


def _reachable(ir: o3.Irrep, ir_out: o3.Irrep, remaining: int, l_in_max: int) -> bool:
    """Whether ``remaining`` more couplings with inputs of degree <= l_in_max can reach ir_out."""
    if remaining == 0:
        return ir == ir_out
    return abs(ir.l - ir_out.l) <= remaining * l_in_max


def coupling_trees(
    irreps_in: o3.Irreps | str,
    irrep_out: o3.Irrep | str,
    correlation: int,
    *,
    natural_parity_only: bool | None = None,
) -> torch.Tensor:
    """One generalised CG tensor per coupling tree of ``correlation`` inputs into ``irrep_out``.

    Args:
        irreps_in: the irreps of one channel of A, e.g. ``"0e + 1o + 2e + 3o"``.
        irrep_out: the irrep L of the feature B.
        correlation: nu, the number of factors of A.
        natural_parity_only: keep only intermediate irreps of natural parity ``(-1)^l``.
            ``None`` (default) does what mace-torch does: only for nu = 4.

    Returns:
        ``[2L+1, K, ..., K, n_paths]`` float64 (``correlation`` axes of size K); ``n_paths``
        may be 0 (e.g. L = 2 from degrees <= 1 with nu = 1).
    """
    irreps_in, irrep_out = o3.Irreps(irreps_in), o3.Irrep(irrep_out)
    if natural_parity_only is None:
        natural_parity_only = correlation == 4
    blocks, K = _input_blocks(irreps_in)
    l_in_max = max(ir.l for ir, _ in blocks)
    # Partial trees over the first k inputs: (irrep, [2l+1, K**k]).
    partial = []
    for ir, offset in blocks:
        start = torch.zeros(ir.dim, K, dtype=F64)
        start[:, offset : offset + ir.dim] = torch.eye(ir.dim, dtype=F64)
        partial.append((ir, start))
    for k in range(2, correlation + 1):
        grown = []
        for ir_left, left in partial:
            for ir_right, offset in blocks:
                for ir_mid in ir_left * ir_right:
                    if natural_parity_only and ir_mid.p != (-1) ** ir_mid.l:
                        continue
                    if not _reachable(ir_mid, irrep_out, correlation - k, l_in_max):
                        continue
                    grown.append((ir_mid, _couple(left, ir_left, ir_right, offset, ir_mid, K)))
        partial = grown
    trees = [tensor for ir, tensor in partial if ir == irrep_out]
    shape = (irrep_out.dim,) + (K,) * correlation
    if not trees:
        return torch.zeros(*shape, 0, dtype=F64)
    return torch.stack(trees, dim=-1).reshape(*shape, len(trees))


def symmetrise(U: torch.Tensor) -> torch.Tensor:
    """The part of ``U`` ``[D, K, ..., K, P]`` symmetric in its K axes (mean over permutations)."""
    nu = U.dim() - 2
    total = torch.zeros_like(U)
    for permutation in itertools.permutations(range(1, nu + 1)):
        total += U.permute(0, *permutation, nu + 1)
    return total / math.factorial(nu)


def orthonormal_span(
    candidates: torch.Tensor, scales: torch.Tensor | None = None, rtol: float = 1e-8
) -> torch.Tensor:
    """An orthonormal basis ``[N, P]`` of the span of the columns of ``candidates`` ``[N, Q]``.

    Classical Gram-Schmidt (twice, for stability) in the columns' order: deterministic, so the
    same hyperparameters give the same basis on every machine (the weights depend on it). A
    column whose remainder is below ``rtol`` times its scale (``scales[j]``, by default its own
    norm) is dependent and dropped; pass the norms *before* a projection (such as
    symmetrisation) as ``scales`` so that columns the projection annihilated up to rounding
    are dropped too.
    """
    n_rows, n_cols = candidates.shape
    if scales is None:
        scales = candidates.norm(dim=0)
    basis = candidates.new_zeros(n_rows, n_cols)
    rank = 0
    for j in range(n_cols):
        vector = candidates[:, j].clone()
        for _ in range(2):
            vector -= basis[:, :rank] @ (basis[:, :rank].T @ vector)
        remainder = vector.norm()
        if remainder > rtol * scales[j] and remainder > 0:
            basis[:, rank] = vector / remainder
            rank += 1
    return basis[:, :rank]


def symmetric_basis(
    irreps_in: o3.Irreps | str, irrep_out: o3.Irrep | str, correlation: int
) -> torch.Tensor:
    """An orthonormal basis of the symmetric equivariant maps ``Sym^nu(A) -> irrep_out``.

    Built degree by degree: the symmetric maps of ``k+1`` inputs into an irrep are spanned by
    the symmetrised couplings of the symmetric maps of ``k`` inputs (into every intermediate
    irrep) with one more input, so each step couples, symmetrises and orthonormalises
    (:func:`orthonormal_span`). Every basis tensor is scaled to Frobenius norm
    ``sqrt(2L+1)``, the norm of one coupling tree.

    Returns:
        ``[2L+1, K, ..., K, n_paths]`` float64, symmetric in the K axes.
    """
    irreps_in, irrep_out = o3.Irreps(irreps_in), o3.Irrep(irrep_out)
    blocks, K = _input_blocks(irreps_in)
    l_in_max = max(ir.l for ir, _ in blocks)
    # level: irrep -> orthonormal symmetric basis [2l+1, K**k, P]
    level: dict[o3.Irrep, torch.Tensor] = {}
    for ir, offset in blocks:
        column = torch.zeros(ir.dim, K, 1, dtype=F64)
        column[:, offset : offset + ir.dim, 0] = torch.eye(ir.dim, dtype=F64)
        level[ir] = column if ir not in level else torch.cat([level[ir], column], dim=-1)
    for k in range(2, correlation + 1):
        candidates: dict[o3.Irrep, list[torch.Tensor]] = {}
        scales: dict[o3.Irrep, list[torch.Tensor]] = {}
        for ir_left, left in level.items():
            for ir_right, offset in blocks:
                for ir_mid in ir_left * ir_right:
                    if not _reachable(ir_mid, irrep_out, correlation - k, l_in_max):
                        continue
                    coupled = _couple(left, ir_left, ir_right, offset, ir_mid, K)
                    # [2l_mid+1, K**k, P_left]; its norms measure what rounding means below
                    scales.setdefault(ir_mid, []).append(coupled.flatten(0, 1).norm(dim=0))
                    coupled = symmetrise(coupled.reshape(ir_mid.dim, *(K,) * k, -1))
                    candidates.setdefault(ir_mid, []).append(coupled.reshape(ir_mid.dim * K**k, -1))
        level = {}
        for ir_mid in sorted(candidates):
            basis = orthonormal_span(
                torch.cat(candidates[ir_mid], dim=-1), torch.cat(scales[ir_mid])
            )
            if basis.shape[1] > 0:
                level[ir_mid] = basis.reshape(ir_mid.dim, K**k, -1)
    shape = (irrep_out.dim,) + (K,) * correlation
    if irrep_out not in level:
        return torch.zeros(*shape, 0, dtype=F64)
    basis = level[irrep_out]
    return (basis * math.sqrt(irrep_out.dim)).reshape(*shape, basis.shape[-1])


def generalised_cg(
    irreps_in: o3.Irreps | str, irrep_out: o3.Irrep | str, correlation: int, reduced: bool
) -> torch.Tensor:
    """The basis U used by the product block: :func:`symmetric_basis` if ``reduced`` else
    :func:`coupling_trees`."""
    if reduced:
        return symmetric_basis(irreps_in, irrep_out, correlation)
    return coupling_trees(irreps_in, irrep_out, correlation)
