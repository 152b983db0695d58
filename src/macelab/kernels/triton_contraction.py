"""The symmetric contraction as one fused Triton kernel.

One program per (block of atoms, block of channels) walks the rows of the output (every
component M of every output irrep L) and, per row, its terms (all orders nu together): it
multiplies the term's factors ``A[n, c, k]`` (read from the input, cached on chip), gathers
``T[z_n, q, c]`` by each atom's element and accumulates in float32 (float64 for float64
inputs), then writes the row once. No ``[n, C, (2L+1) K^(nu-1)]`` intermediate exists.

Derivatives: :class:`TritonContraction` computes the forward in Triton. Its first-order
backward (forces at inference, the energy loss's weight gradient) is a second Triton
kernel, :func:`triton_contract_backward`: ``dA[n, c, k] = sum g T prod_{j != i} A_{k_j}``
over the occurrences (q, i) of k in the terms, visited in order of k so that each
``dA[:, :, k]`` is accumulated on chip and written once, and ``dT[z, q, c] += sum_n g prod
A`` (summed over the block's atoms of each element, then one atomic add per element). When
the backward itself is to be differentiated (the weight gradient of a force loss,
``create_graph=True``), it is instead the autograd graph of
:func:`~macelab.kernels.sparse_torch.contract_tables` (the same sums in torch ops) on the
saved inputs, which autograd differentiates again. The chain from ``T`` to the weights
``W`` is torch (:meth:`SparseContraction.element_tables`) outside the Function.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import torch

from macelab.kernels.sparse_cg import SparseContraction
from macelab.kernels.sparse_torch import assemble, contract_tables

BLOCK_ATOMS = 16
BLOCK_CHANNELS = 32


def triton_available() -> str | None:
    """None if the Triton backend can run here, else why not."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'macelab[kernels]')"
    if not torch.cuda.is_available() and not interpreting():
        return "triton needs a CUDA GPU, or TRITON_INTERPRET=1 to run its interpreter on CPU"
    return None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _kernel(interpret: bool) -> Any:
    """The jitted kernel, defined on first use (Triton reads TRITON_INTERPRET then)."""
    del interpret  # the cache key: a kernel per mode
    import triton
    import triton.language as tl

    @triton.jit
    def contraction_kernel(
        a_ptr,  # [n, C, K] contiguous
        z_ptr,  # [n] int32 element index
        t_ptr,  # [E, Q, C] contiguous
        term_k_ptr,  # [Q, MAX_ORDER] int32, -1 beyond the order
        term_row_ptr,  # [Q] int32, sorted
        row_base_ptr,  # [R] int32
        row_stride_ptr,  # [R] int32
        out_ptr,  # [n, out_dim] contiguous
        n_atoms,
        channels,
        out_dim,
        NUM_TERMS: tl.constexpr,
        K: tl.constexpr,
        MAX_ORDER: tl.constexpr,
        ACC_FP64: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        atoms = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        atom_ok = atoms < n_atoms
        mask = atom_ok[:, None] & (chans[None, :] < channels)
        atoms64 = atoms.to(tl.int64)
        a_rows = a_ptr + (atoms64[:, None] * channels + chans[None, :]) * K  # [BN, BC]
        z = tl.load(z_ptr + atoms, mask=atom_ok, other=0).to(tl.int64)
        t_rows = t_ptr + z[:, None] * NUM_TERMS * channels + chans[None, :]  # [BN, BC]
        acc_dtype = tl.float64 if ACC_FP64 else tl.float32
        # tl.full, not tl.zeros: the latter is a jitted helper, which the interpreter refuses
        # when triton was imported before TRITON_INTERPRET was set
        acc = tl.full([BLOCK_N, BLOCK_C], 0.0, dtype=acc_dtype)
        # One pass over the terms, sorted by output row; a row is written after its last
        # term. (The bound is a constexpr: Triton 3.5's interpreter cannot take a loaded
        # scalar as a loop bound under numpy >= 2.3.)
        for q in range(0, NUM_TERMS):
            k = tl.load(term_k_ptr + q * MAX_ORDER)
            product = tl.load(a_rows + k, mask=mask, other=0.0).to(acc_dtype)
            for xi in tl.static_range(1, MAX_ORDER):
                k = tl.load(term_k_ptr + q * MAX_ORDER + xi)
                factor = tl.load(a_rows + k, mask=mask & (k >= 0), other=1.0)
                product = product * factor.to(acc_dtype)
            table = tl.load(t_rows + q * channels, mask=mask, other=0.0).to(acc_dtype)
            acc += product * table
            row = tl.load(term_row_ptr + q)
            next_row = tl.load(term_row_ptr + q + 1, mask=q + 1 < NUM_TERMS, other=-1)
            if next_row != row:
                base = tl.load(row_base_ptr + row)
                stride = tl.load(row_stride_ptr + row)
                out = out_ptr + atoms64[:, None] * out_dim + base + chans[None, :] * stride
                tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)
                acc = tl.full([BLOCK_N, BLOCK_C], 0.0, dtype=acc_dtype)

    return contraction_kernel


# Elements up to which dT is reduced per element inside a program (one atomic add per
# element and term); beyond, each atom adds its own row atomically.
MAX_REDUCED_ELEMENTS = 8


@functools.cache
def _backward_kernel(interpret: bool) -> Any:
    """The jitted first-order backward, defined on first use like :func:`_kernel`."""
    del interpret
    import triton
    import triton.language as tl

    # The sum's combine function, jitted here and not tl.sum: tl.sum was jitted at import,
    # which the interpreter refuses when triton was imported before TRITON_INTERPRET was set.
    # (Triton resolves names in the module's globals, not in this closure.)
    @triton.jit
    def add(a, b):
        return a + b

    globals()["_combine_add"] = add

    @triton.jit
    def contraction_backward_kernel(
        a_ptr,  # [n, C, K] contiguous
        z_ptr,  # [n] int32 element index
        t_ptr,  # [E, Q, C] contiguous
        term_k_ptr,  # [Q, MAX_ORDER] int32, -1 beyond the order
        term_row_ptr,  # [Q] int32
        row_base_ptr,  # [R] int32
        row_stride_ptr,  # [R] int32
        factor_term_ptr,  # [F] int32: the term of each factor occurrence, sorted by k
        factor_pos_ptr,  # [F] int32: its position in the term
        factor_k_ptr,  # [F] int32: its k (sorted)
        grad_ptr,  # [n, out_dim] contiguous: dL/dm
        da_ptr,  # [n, C, K] zeros
        dt_ptr,  # [E, Q, C] zeros, accumulation dtype
        n_atoms,
        channels,
        out_dim,
        NUM_TERMS: tl.constexpr,
        NUM_FACTORS: tl.constexpr,
        NUM_ELEMENTS: tl.constexpr,
        K: tl.constexpr,
        MAX_ORDER: tl.constexpr,
        ACC_FP64: tl.constexpr,
        COMPUTE_DA: tl.constexpr,
        COMPUTE_DT: tl.constexpr,
        REDUCE_ELEMENTS: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        atoms = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        atom_ok = atoms < n_atoms
        chan_ok = chans < channels
        mask = atom_ok[:, None] & chan_ok[None, :]
        atoms64 = atoms.to(tl.int64)
        offsets = (atoms64[:, None] * channels + chans[None, :]) * K  # [BN, BC]
        a_rows = a_ptr + offsets
        g_rows = grad_ptr + atoms64[:, None] * out_dim  # [BN, 1]
        z = tl.load(z_ptr + atoms, mask=atom_ok, other=0).to(tl.int64)
        t_rows = t_ptr + z[:, None] * NUM_TERMS * channels + chans[None, :]  # [BN, BC]
        acc_dtype = tl.float64 if ACC_FP64 else tl.float32
        if COMPUTE_DA:
            # dA[k] = sum over the occurrences of A_k in a term q at position i of
            #   g[row_q] T[z, q] prod_{j != i} A_{k_j}
            # (a repeated factor occurs once per position: d(A^2) = 2A). The occurrences
            # are sorted by k, so dA[:, :, k] is accumulated on chip and written once.
            acc = tl.full([BLOCK_N, BLOCK_C], 0.0, dtype=acc_dtype)
            for f in range(0, NUM_FACTORS):
                q = tl.load(factor_term_ptr + f)
                i = tl.load(factor_pos_ptr + f)
                k = tl.load(factor_k_ptr + f)
                row = tl.load(term_row_ptr + q)
                base = tl.load(row_base_ptr + row)
                stride = tl.load(row_stride_ptr + row)
                g = tl.load(g_rows + base + chans[None, :] * stride, mask=mask, other=0.0)
                table = tl.load(t_rows + q * channels, mask=mask, other=0.0)
                partial = g.to(acc_dtype) * table.to(acc_dtype)
                for j in tl.static_range(MAX_ORDER):
                    k_j = tl.load(term_k_ptr + q * MAX_ORDER + j)
                    use = (k_j >= 0) & (i != j)
                    factor = tl.load(a_rows + k_j, mask=mask & use, other=1.0)
                    partial = partial * factor.to(acc_dtype)
                acc += partial
                next_k = tl.load(factor_k_ptr + f + 1, mask=f + 1 < NUM_FACTORS, other=-1)
                if next_k != k:
                    tl.store(da_ptr + offsets + k, acc.to(da_ptr.dtype.element_ty), mask=mask)
                    acc = tl.full([BLOCK_N, BLOCK_C], 0.0, dtype=acc_dtype)
        if COMPUTE_DT:
            # dT[z, q] = sum over the atoms of element z of g[row_q] prod_xi A_{k_xi}
            for q in range(0, NUM_TERMS):
                row = tl.load(term_row_ptr + q)
                base = tl.load(row_base_ptr + row)
                stride = tl.load(row_stride_ptr + row)
                g = tl.load(g_rows + base + chans[None, :] * stride, mask=mask, other=0.0)
                k = tl.load(term_k_ptr + q * MAX_ORDER)
                product = tl.load(a_rows + k, mask=mask, other=0.0).to(acc_dtype)
                for xi in tl.static_range(1, MAX_ORDER):
                    k = tl.load(term_k_ptr + q * MAX_ORDER + xi)
                    factor = tl.load(a_rows + k, mask=mask & (k >= 0), other=1.0)
                    product = product * factor.to(acc_dtype)
                contribution = g.to(acc_dtype) * product  # zero outside the mask
                if REDUCE_ELEMENTS:
                    for e in tl.static_range(NUM_ELEMENTS):
                        mine = tl.where((z == e)[:, None], contribution, 0.0)
                        total = tl.reduce(mine, 0, _combine_add)  # noqa: F821 [BC]
                        tl.atomic_add(
                            dt_ptr + (e * NUM_TERMS + q) * channels + chans, total, mask=chan_ok
                        )
                else:
                    dt_ptrs = dt_ptr + (z[:, None] * NUM_TERMS + q) * channels + chans[None, :]
                    tl.atomic_add(dt_ptrs, contribution, mask=mask)

    return contraction_backward_kernel


def triton_contract_backward(
    grad_out: torch.Tensor,  # [n, out_dim]
    features: torch.Tensor,  # [n, C, K]
    elements: torch.Tensor,  # [n] int32
    tables: torch.Tensor,  # [E, Q, C], float32 or float64
    sparse: SparseContraction,
    compute_features: bool,
    compute_tables: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(dL/dA [n, C, K], dL/dT [E, Q, C])`` for ``dL/dm = grad_out``, each None unless
    asked; accumulated in the tables' dtype, returned in the inputs' dtypes."""
    import triton

    n, C, K = features.shape
    features = features.contiguous()
    tables = tables.contiguous()
    grad_out = grad_out.contiguous()
    acc = tables.dtype
    # every dA[:, :, k] is written (zero where k occurs in no term: the zeros stay)
    d_features = features.new_zeros(n, C, K)
    d_tables = torch.zeros_like(tables)
    factor_term, factor_pos, factor_k = factor_occurrences(sparse)
    grid = (triton.cdiv(n, BLOCK_ATOMS), triton.cdiv(C, BLOCK_CHANNELS))
    _backward_kernel(interpreting())[grid](
        features,
        elements,
        tables,
        sparse.term_k,
        sparse.term_row32,
        sparse.row_base,
        sparse.row_stride,
        factor_term,
        factor_pos,
        factor_k,
        grad_out,
        d_features,
        d_tables,
        n,
        C,
        sparse.out_dim,
        NUM_TERMS=sparse.num_terms,
        NUM_FACTORS=int(factor_k.numel()),
        NUM_ELEMENTS=tables.shape[0],
        K=K,
        MAX_ORDER=sparse.max_order,
        ACC_FP64=acc == torch.float64,
        COMPUTE_DA=compute_features,
        COMPUTE_DT=compute_tables,
        REDUCE_ELEMENTS=tables.shape[0] <= MAX_REDUCED_ELEMENTS,
        BLOCK_N=BLOCK_ATOMS,
        BLOCK_C=BLOCK_CHANNELS,
    )
    return (d_features if compute_features else None, d_tables if compute_tables else None)


def factor_occurrences(
    sparse: SparseContraction,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(term, position, k)`` of every factor of every term, sorted by k (int32 each),
    cached on ``sparse``: the backward kernel's loop order for dA."""
    cached = sparse.__dict__.get("_factor_occurrences")
    if cached is None:
        term_k = sparse.term_k.long()  # [Q, max_order]
        terms, positions = torch.nonzero(term_k >= 0, as_tuple=True)
        ks = term_k[terms, positions]
        order = torch.argsort(ks * term_k.numel() + terms * sparse.max_order + positions)
        cached = tuple(t[order].to(torch.int32).contiguous() for t in (terms, positions, ks))
        sparse.__dict__["_factor_occurrences"] = cached
    return cached


def triton_contract_tables(
    features: torch.Tensor,  # [n, C, K]
    elements: torch.Tensor,  # [n] int32
    tables: torch.Tensor,  # [E, Q, C], float32 or float64
    sparse: SparseContraction,
    out_dtype: torch.dtype,
) -> torch.Tensor:  # [n, out_dim]
    import triton

    n, C, K = features.shape
    features = features.contiguous()
    tables = tables.contiguous()
    # rows without terms (an irrep no path reaches) stay zero
    out = features.new_zeros(n, sparse.out_dim, dtype=out_dtype)
    grid = (triton.cdiv(n, BLOCK_ATOMS), triton.cdiv(C, BLOCK_CHANNELS))
    _kernel(interpreting())[grid](
        features,
        elements,
        tables,
        sparse.term_k,
        sparse.term_row32,
        sparse.row_base,
        sparse.row_stride,
        out,
        n,
        C,
        sparse.out_dim,
        NUM_TERMS=sparse.num_terms,
        K=K,
        MAX_ORDER=sparse.max_order,
        ACC_FP64=tables.dtype == torch.float64,
        BLOCK_N=BLOCK_ATOMS,
        BLOCK_C=BLOCK_CHANNELS,
    )
    return out


class TritonContraction(torch.autograd.Function):
    """``(A, T) -> m``: Triton forward; Triton backward, or the torch graph's (differentiable
    again) when the backward is recorded for a second derivative."""

    @staticmethod
    def forward(
        ctx: Any,
        features: torch.Tensor,
        tables: torch.Tensor,
        node_attrs: torch.Tensor,
        sparse: SparseContraction,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        elements = node_attrs.argmax(dim=1).to(torch.int32)
        ctx.save_for_backward(features, tables, node_attrs, elements)
        ctx.sparse = sparse
        return triton_contract_tables(features, elements, tables, sparse, out_dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        features, tables, node_attrs, elements = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:2]
        create_graph = torch.is_grad_enabled()  # True inside a create_graph=True backward
        if not create_graph:  # a first derivative only: the Triton backward kernel
            d_features, d_tables = triton_contract_backward(
                grad_out, features, elements, tables, ctx.sparse, wanted[0], wanted[1]
            )
            return d_features, d_tables, None, None, None
        inputs = []
        for tensor, needed in zip((features, tables), wanted, strict=True):
            if not create_graph or not tensor.requires_grad:
                tensor = tensor.detach().requires_grad_(needed)
            inputs.append(tensor)
        with torch.enable_grad():
            rows = contract_tables(inputs[0], node_attrs, inputs[1], ctx.sparse)
            out = assemble(rows, ctx.sparse)
            targets = [t for t, needed in zip(inputs, wanted, strict=True) if needed]
            grads = iter(
                torch.autograd.grad(out, targets, grad_out.to(out.dtype), create_graph=create_graph)
            )
        result = [next(grads) if needed else None for needed in wanted]
        result[0] = None if result[0] is None else result[0].to(features.dtype)
        return result[0], result[1], None, None, None


def triton_contract(
    features: torch.Tensor,
    node_attrs: torch.Tensor,
    weight_tables: list[torch.Tensor],
    sparse: SparseContraction,
) -> torch.Tensor:
    """Eq. 10-11 in the Triton kernel: A ``[n, C, K]`` -> ``[n, out_dim]``; ``node_attrs``
    must be one-hot (the kernel gathers the weights of each atom's element)."""
    if sparse.num_terms == 0:
        return features.new_zeros(features.shape[0], sparse.out_dim)
    out_dtype = torch.promote_types(features.dtype, weight_tables[0].dtype)
    tables = sparse.element_tables(weight_tables)
    return TritonContraction.apply(features, tables, node_attrs, sparse, out_dtype)
