"""The symmetric contraction from the sparse CG terms, in plain torch (any device, any
dtype, differentiable to any order by autograd).

For each chunk of terms ``q``: gather the factors ``A[n, c, k_{q,xi}]`` and multiply them,
multiply by the receiving atom's ``T[z_n, q, c]`` (``coeff * W`` summed over paths,
:meth:`SparseContraction.element_tables`), and ``index_add`` into the output row of the
term. Arithmetic is in the coefficients' dtype (float32, float64 for float64 models); the
result has the dtype of ``features`` and the weights promoted together.

This is the reference of the Triton kernel and its backward (its autograd graph gives the
kernel's first and second derivatives); it is not tuned for memory: the chunked products
``[n, C, chunk]`` are kept for the backward.
"""

from __future__ import annotations

import torch

from macelab.kernels.sparse_cg import PAD, SparseContraction

# Elements of one chunk's intermediates ([n, C, terms]).
_CHUNK_ELEMENTS = 2**25


def contract_tables(
    features: torch.Tensor,  # A [n, C, K]
    node_attrs: torch.Tensor,  # [n, n_elements], one-hot (any weights work: linear in them)
    tables: torch.Tensor,  # T [n_elements, Q, C]
    sparse: SparseContraction,
) -> torch.Tensor:  # [n, C, R] in the tables' dtype
    n, C, K = features.shape
    dtype = tables.dtype
    ones = features.new_ones(n, C, 1)
    padded = torch.cat([features, ones], dim=2).to(dtype)  # [n, C, K + 1]: index K is a 1
    term_k = torch.where(sparse.term_k == PAD, K, sparse.term_k).long()  # [Q, max_order]
    attrs = node_attrs.to(dtype)
    out = padded.new_zeros(n, C, sparse.num_rows)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n * C))
    for start in range(0, sparse.num_terms, chunk):
        ks = term_k[start : start + chunk]
        product = padded[:, :, ks[:, 0]]  # [n, C, chunk]
        for xi in range(1, sparse.max_order):
            product = product * padded[:, :, ks[:, xi]]
        per_atom = torch.einsum("ne,eqc->ncq", attrs, tables[:, start : start + chunk])
        out = out.index_add(2, sparse.term_row[start : start + chunk], product * per_atom)
    return out


def assemble(rows: torch.Tensor, sparse: SparseContraction) -> torch.Tensor:
    """``[n, C, R]`` rows -> ``[n, out_dim]`` in e3nn's layout (each block ``C x (2L+1)``)."""
    n = rows.shape[0]
    blocks = [rows[:, :, first : first + D].reshape(n, -1) for first, D, _ in sparse.blocks]
    return torch.cat(blocks, dim=1)


def sparse_contract(
    features: torch.Tensor,
    node_attrs: torch.Tensor,
    weight_tables: list[torch.Tensor],
    sparse: SparseContraction,
) -> torch.Tensor:
    """Eq. 10-11 from the sparse terms: A ``[n, C, K]`` -> ``[n, out_dim]``."""
    if sparse.num_terms == 0:  # no path reaches any output irrep: the message is zero
        return features.new_zeros(features.shape[0], sparse.out_dim)
    out_dtype = torch.promote_types(features.dtype, weight_tables[0].dtype)
    tables = sparse.element_tables(weight_tables)
    rows = contract_tables(features, node_attrs, tables, sparse)
    return assemble(rows, sparse).to(out_dtype)
