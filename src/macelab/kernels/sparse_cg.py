"""The generalised Clebsch-Gordan tensors of Eq. 10-11 in sparse (COO) form.

A dense ``U_nu`` (``[2L+1, K, ..., K, P]``, :meth:`IrrepContraction.U`) is mostly zeros:
for the paper's model (K = 16, L <= 2, nu = 3) about 9 000 of its 1.1 million entries are
nonzero. Two forms are kept:

- :func:`coo_from_dense`: the exact nonzero entries ``(m, k_1..k_nu, p) -> U`` of one
  tensor (and :func:`dense_from_coo` back), the form the tests compare with U;
- :class:`SparseContraction`: every output irrep and order of a symmetric contraction
  merged into one list of *terms*. The product ``prod_xi A_{k_xi}`` is symmetric in the
  ``k``, so entries that differ by a permutation of ``k`` are merged (their coefficients
  summed) into one sorted monomial. A term ``q`` is one (output row, monomial) pair, with
  per-element tables

      T[z, q, c] = sum_{(q, p) entries} coeff * W^(nu)[z, p, c]

  so that ``m[n, c, row] = sum_{q in row} T[z_n, q, c] * prod_xi A[n, c, k_{q,xi}]``.

Coefficients keep the dtype of the module's U buffers (float32, float64 for float64 models).
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass

import torch

from macelab.model.symmetric_contraction import IrrepContraction, SymmetricContraction

# Pad value of ``term_k`` for monomials of order below the largest one (a factor of 1).
PAD = -1


def coo_from_dense(U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The nonzero entries of ``U`` ``[D, K, ..., K, P]``: indices ``[nnz, U.dim()]`` (int64,
    columns m, k_1..k_nu, p) and values ``[nnz]`` (U's dtype), exact."""
    indices = torch.nonzero(U, as_tuple=False)
    return indices, U[tuple(indices.T)]


def dense_from_coo(indices: torch.Tensor, values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`coo_from_dense`."""
    dense = torch.zeros(shape, dtype=values.dtype, device=values.device)
    dense[tuple(indices.T)] = values
    return dense


@dataclass
class SparseContraction:
    """All output irreps and orders of one contraction as terms (see the module docstring).

    Output layout: the irreps' blocks one after the other, each ``C x (2L+1)`` (e3nn's);
    row ``r`` (component m of block b) of channel c lands at ``row_base[r] + c * row_stride[r]``.
    """

    channels: int  # C
    num_components: int  # K
    max_order: int  # largest nu among the terms (columns of term_k)
    out_dim: int  # sum over blocks of C * (2L+1)
    blocks: list[tuple[int, int, int]]  # (first row, 2L+1, first output column) per irrep
    weight_keys: list[tuple[int, int]]  # (irrep index, nu) of each element-weight table
    num_paths: int  # paths of all tables together (W_cat's middle dimension)
    # terms, sorted by row; row_ptr[r]:row_ptr[r+1] are the terms of row r
    term_row: torch.Tensor  # [Q] int64
    term_row32: torch.Tensor  # [Q] int32 (the kernel's copy)
    term_k: torch.Tensor  # [Q, max_order] int32, PAD beyond the term's order
    term_order: torch.Tensor  # [Q] int64
    row_ptr: torch.Tensor  # [R + 1] int32
    row_base: torch.Tensor  # [R] int32
    row_stride: torch.Tensor  # [R] int32
    # (term, path, coefficient) entries: T = sum coeff * W_cat[:, path]
    entry_term: torch.Tensor  # [nnz] int64
    entry_path: torch.Tensor  # [nnz] int64
    entry_coeff: torch.Tensor  # [nnz], float32 or float64

    @property
    def num_terms(self) -> int:
        return int(self.term_row.numel())

    @property
    def num_rows(self) -> int:
        return int(self.row_base.numel())

    def multiply_adds_per_atom_channel(self) -> int:
        """Useful multiply-adds of one atom and channel: ``nu - 1`` products for each
        monomial, one multiply-add into the output."""
        return int(self.term_order.sum())

    def element_tables(self, weight_tables: list[torch.Tensor]) -> torch.Tensor:
        """``T [n_elements, Q, C]`` in the coefficients' dtype from the weight tables
        ``[n_elements, P_j, C]`` (in ``weight_keys`` order); differentiable."""
        weights = torch.cat(weight_tables, dim=1).to(self.entry_coeff.dtype)  # [E, P, C]
        contributions = weights[:, self.entry_path, :] * self.entry_coeff[None, :, None]
        tables = weights.new_zeros(weights.shape[0], self.num_terms, weights.shape[2])
        return tables.index_add(1, self.entry_term, contributions)


def _contractions(module: torch.nn.Module) -> list[IrrepContraction]:
    if isinstance(module, SymmetricContraction):
        return list(module.contractions)
    if isinstance(module, IrrepContraction):
        return [module]
    raise TypeError(f"expected a SymmetricContraction or IrrepContraction, got {type(module)}")


def build_sparse_contraction(module: torch.nn.Module) -> SparseContraction:
    """Terms of ``module``'s active orders (``nu <= active_correlation``), on its device."""
    contractions = _contractions(module)
    K = contractions[0].num_components
    C = contractions[0].channels
    terms: dict[tuple[int, tuple[int, ...]], int] = {}  # (row, sorted k) -> term index
    entries: dict[tuple[int, int], float] = {}  # (term, path) -> coefficient
    blocks, weight_keys = [], []
    row, column, path_offset = 0, 0, 0
    coeff_dtype = contractions[0].U(1).dtype
    device = contractions[0].U(1).device
    for j, contraction in enumerate(contractions):
        D = contraction.irrep_out.dim
        blocks.append((row, D, column))
        for nu in range(1, contraction.active_correlation + 1):
            if str(nu) not in contraction.weights:
                continue
            U = contraction.U(nu).detach().to("cpu", torch.float64)
            indices, values = coo_from_dense(U)
            for index, value in zip(indices.tolist(), values.tolist(), strict=True):
                key = (row + index[0], tuple(sorted(index[1:-1])))
                q = terms.setdefault(key, len(terms))
                entry = (q, path_offset + index[-1])
                entries[entry] = entries.get(entry, 0.0) + value
            weight_keys.append((j, nu))
            path_offset += U.shape[-1]
        row += D
        column += C * D
    # sort the terms by row (then monomial) so each row is one contiguous range
    order = sorted(terms, key=lambda key: (key[0], len(key[1]), key[1]))
    renumber = {terms[key]: i for i, key in enumerate(order)}
    max_order = max((len(k) for _, k in order), default=1)
    term_k = [list(k) + [PAD] * (max_order - len(k)) for _, k in order]
    term_row = [r for r, _ in order]
    kept = [(renumber[q], p, c) for (q, p), c in sorted(entries.items()) if c != 0.0]
    row_ptr = [0] * (row + 1)
    for r in term_row:
        row_ptr[r + 1] += 1
    row_ptr = list(itertools.accumulate(row_ptr))
    row_base, row_stride = [], []
    for _, D, col in blocks:
        row_base += [col + m for m in range(D)]
        row_stride += [D] * D

    def tensor(values: list, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device)

    return SparseContraction(
        channels=C,
        num_components=K,
        max_order=max_order,
        out_dim=column,
        blocks=blocks,
        weight_keys=weight_keys,
        num_paths=path_offset,
        term_row=tensor(term_row, torch.int64),
        term_row32=tensor(term_row, torch.int32),
        term_k=tensor(term_k, torch.int32).reshape(len(order), max_order),
        term_order=tensor([len(k) for _, k in order], torch.int64),
        row_ptr=tensor(row_ptr, torch.int32),
        row_base=tensor(row_base, torch.int32),
        row_stride=tensor(row_stride, torch.int32),
        entry_term=tensor([q for q, _, _ in kept], torch.int64),
        entry_path=tensor([p for _, p, _ in kept], torch.int64),
        entry_coeff=tensor([c for _, _, c in kept], coeff_dtype),
    )


_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, SparseContraction]] = (
    weakref.WeakKeyDictionary()
)


def sparse_contraction(module: torch.nn.Module) -> SparseContraction:
    """:func:`build_sparse_contraction`, cached per module, device, constant dtype and active
    orders (built once; a cast, a move or ``set_correlation`` selects another entry)."""
    contractions = _contractions(module)
    U = contractions[0].U(1)
    key = (U.device, U.dtype, tuple(c.active_correlation for c in contractions))
    per_module = _CACHE.setdefault(module, {})
    if key not in per_module:
        per_module[key] = build_sparse_contraction(module)
    return per_module[key]


def weight_tables(module: torch.nn.Module, sparse: SparseContraction) -> list[torch.Tensor]:
    """The element-weight tables ``[n_elements, P, C]`` of ``sparse.weight_keys``, through
    :meth:`IrrepContraction.element_weights` (so compressed tables are expanded)."""
    contractions = _contractions(module)
    return [contractions[j].element_weights(nu) for j, nu in sparse.weight_keys]
