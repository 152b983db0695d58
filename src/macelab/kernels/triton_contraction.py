"""The symmetric contraction as one fused Triton kernel.

One program per (block of atoms, block of channels) walks the rows of the output (every
component M of every output irrep L) and, per row, its terms (all orders nu together): it
multiplies the term's factors ``A[n, c, k]`` (read from the input, cached on chip), gathers
``T[z_n, q, c]`` by each atom's element and accumulates in float32 (float64 for float64
inputs), then writes the row once. No ``[n, C, (2L+1) K^(nu-1)]`` intermediate exists.

Derivatives: :class:`TritonContraction` computes the forward in Triton; its backward is the
autograd graph of :func:`~macelab.kernels.sparse_torch.contract_tables` (the same sums in
torch ops), run on the saved inputs. When the backward itself is differentiated (the
weight gradient of a force loss), autograd differentiates those torch ops again, so double
backward works without a second kernel. The chain from ``T`` to the weights ``W`` is torch
(:meth:`SparseContraction.element_tables`) outside the Function.
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
    """``(A, T) -> m``: Triton forward, torch-graph backward (differentiable again)."""

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
        ctx.save_for_backward(features, tables, node_attrs)
        ctx.sparse = sparse
        return triton_contract_tables(features, elements, tables, sparse, out_dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        features, tables, node_attrs = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:2]
        create_graph = torch.is_grad_enabled()  # True inside a create_graph=True backward
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
