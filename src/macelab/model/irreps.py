"""The irreducible representations (irreps) that MACE's features carry, spelled out.

Every feature in the model is a direct sum of O(3) irreps ``L p`` (degree ``L``, parity
``p``), written in e3nn's notation, e.g. ``"16x0e + 16x1o + 16x2e"``: 16 channels of scalars,
16 of vectors and 16 of rank-2 tensors. MACE only uses irreps of *natural* parity,
``p = (-1)^L`` (``0e, 1o, 2e, 3o, ...``), exactly those the spherical harmonics produce.

Layouts. e3nn stores a feature of irreps ``C x 0e + C x 1o`` as a flat ``[..., C*1 + C*3]``
tensor, block by block and channel-major inside a block. The product basis (Eq. 10) works on
the same numbers arranged as ``[..., C, (max_ell+1)**2]``: channel ``k`` then the ``(l, m)``
components of all degrees one after the other (:func:`flat_to_channels`).
"""

from __future__ import annotations

import torch
from e3nn import o3  # safe: importing macelab first made e3nn importable (macelab._compat)


def natural_irrep(l: int) -> o3.Irrep:  # noqa: E741 (l is the paper's symbol)
    """The irrep of degree ``l`` with natural parity ``(-1)^l`` (``0e``, ``1o``, ``2e``...)."""
    return o3.Irrep(l, (-1) ** l)


def hidden_irreps(channels: int, max_L: int) -> o3.Irreps:
    """Irreps of the node features h_i: ``channels x (0e + 1o + ... + max_L p)``.

    E.g. ``hidden_irreps(128, 1) == "128x0e + 128x1o"`` (mace-torch's "medium").
    """
    return o3.Irreps([(channels, natural_irrep(L)) for L in range(max_L + 1)])


def scalar_irreps(channels: int) -> o3.Irreps:
    """``channels x 0e``: invariant features only (the first layer's input, the last output)."""
    return o3.Irreps([(channels, (0, 1))])


def sh_irreps(max_ell: int) -> o3.Irreps:
    """Irreps of the spherical harmonics Y_lm up to ``max_ell``: ``1x0e + 1x1o + ...``."""
    return o3.Irreps.spherical_harmonics(max_ell)


def a_irreps(channels: int, max_ell: int) -> o3.Irreps:
    """Irreps of the atomic basis A_{i,klm} (Eq. 9): ``channels x (0e + 1o + ... + max_ell p)``."""
    return hidden_irreps(channels, max_ell)


def channelwise_instructions(
    irreps_node: o3.Irreps, irreps_edge: o3.Irreps, irreps_target: o3.Irreps
) -> tuple[o3.Irreps, list[tuple[int, int, int, str, bool]]]:
    """Paths of the channel-wise ("uvu") tensor product of Eq. 8, and its output irreps.

    Every block ``C x l1`` of the node features is coupled with every spherical harmonic
    ``l2`` into each ``l3`` in ``|l1 - l2| .. l1 + l2`` of matching parity that the target
    irreps hold; channel ``k`` of the output only sees channel ``k`` of the input ("uvu"),
    with one learnable weight per channel and path (supplied per edge by the radial MLP).

    The output irreps are sorted by irrep (so that the next linear layer can merge equal
    irreps) and the instructions renumbered and ordered accordingly. This is the order
    mace-torch uses, so radial-MLP weights carry over unchanged.

    Returns:
        ``irreps_mid`` (one ``C x l3`` block per path, sorted) and the e3nn instructions
        ``(i_node, i_edge, i_out, "uvu", True)``.
    """
    blocks: list[tuple[int, o3.Irrep]] = []
    paths: list[tuple[int, int, int]] = []
    for i_node, (mul, ir_node) in enumerate(irreps_node):
        for i_edge, (_, ir_edge) in enumerate(irreps_edge):
            for ir_out in ir_node * ir_edge:
                if ir_out in irreps_target:
                    paths.append((i_node, i_edge, len(blocks)))
                    blocks.append((mul, ir_out))
    irreps_mid, permutation, _ = o3.Irreps(blocks).sort()
    instructions = sorted(
        ((i_node, i_edge, permutation[i_out], "uvu", True) for i_node, i_edge, i_out in paths),
        key=lambda instruction: instruction[2],
    )
    return irreps_mid, instructions


def flat_to_channels(x: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    """``[n, irreps.dim]`` (e3nn layout) -> ``[n, C, sum_l (2l+1)]`` for equal multiplicities C.

    Block ``C x l`` becomes ``[n, C, 2l+1]``; the blocks are concatenated on the last axis.
    """
    blocks = []
    start = 0
    for mul, ir in irreps:
        blocks.append(x[:, start : start + mul * ir.dim].reshape(x.shape[0], mul, ir.dim))
        start += mul * ir.dim
    return torch.cat(blocks, dim=-1)


def channelwise_tensor_product(
    irreps_node: o3.Irreps, irreps_edge: o3.Irreps, irreps_target: o3.Irreps
) -> o3.TensorProduct:
    """Eq. 8's channel-wise tensor product (paths of :func:`channelwise_instructions`),
    with per-edge weights given at call time (the radial MLP's output)."""
    irreps_mid, instructions = channelwise_instructions(irreps_node, irreps_edge, irreps_target)
    return o3.TensorProduct(
        irreps_node,
        irreps_edge,
        irreps_mid,
        instructions=instructions,
        shared_weights=False,
        internal_weights=False,
    )
