"""The Triton kernels of the symmetric contraction (Eq. 10-11) and of its derivatives.

The contraction is a polynomial in A with the element tables T as coefficients
(:mod:`macelab.kernels.sparse_cg`):

    m[n, c, r] = sum_{q in row r} T[z_n, q, c] P_q,      P_q = prod_xi A[n, c, k_{q,xi}]

Three kernels evaluate everything that training with forces needs, each for a block of
atoms x a block of channels x one slice of the sums (the third grid axis), so that even
one molecule fills the GPU:

- :func:`rows` (grid axis: output rows r). The forward, ``acc += T_q P_q``; or its
  *tangent* in a direction ``(vA, vT)``, ``acc += T_q dP_q[vA] + vT_q P_q`` with
  ``dP_q[vA] = sum_i vA_{k_i} prod_{j != i} A_{k_j}``. The pair ``(P, dP)`` is carried
  through the factors as a dual number: ``(P, dP) <- (P a, dP a + P va)``.
- :func:`components` (grid axis: the K components of A). ``dA[k]`` sums, over the
  occurrences ``(q, i)`` of ``k`` in the terms, ``g_{r_q} T_q prod_{j != i} A_{k_j}`` (the
  first derivative); or ``g_{r_q} (T_q dQ[vA] + vT_q Q)`` with ``Q = prod_{j != i} A_{k_j}``
  (the second derivative's A part).
- :func:`terms` (grid axis: chunks of terms). ``dT[z, q] += sum_{n of element z} g_{r_q}
  P_q`` (first derivative) or ``g_{r_q} dP_q[vA]`` (second), summed per element inside
  the program and added atomically.

Every product is accumulated in float32 (float64 for float64 tables); A and g may be
lower precision. Each output element of ``rows`` and ``components`` is written by exactly
one program (deterministic); ``terms`` adds with atomics. Kernels are jitted on first use,
after ``TRITON_INTERPRET`` is read, so they also run in Triton's CPU interpreter.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional

import torch

# The block of (atoms, channels) of one program; TERMS_PER_PROGRAM bounds a dT program.
BLOCK_ATOMS = 16
BLOCK_CHANNELS = 32
TERMS_PER_PROGRAM = 64
# dT sums over atoms with atomics: wider atom blocks, fewer atomic adds per table entry.
TERMS_BLOCK_ATOMS = 64
# Elements up to which dT is reduced per element inside a program (one atomic add per
# element and term); beyond, each atom adds its own row atomically.
MAX_REDUCED_ELEMENTS = 8


@functools.cache
def _kernels(interpret: bool) -> dict[str, Any]:
    """The three jitted kernels; one set per mode (the cache key)."""
    del interpret
    import triton
    import triton.language as tl

    # tl.sum's combine function, jitted here: tl.sum was jitted at import, which the
    # interpreter refuses when triton was imported before TRITON_INTERPRET was set (and
    # Triton resolves names in the module's globals, not in this closure).
    @triton.jit
    def add(a, b):
        return a + b

    globals()["_combine_add"] = add

    @triton.jit
    def rows_kernel(
        a_ptr,  # A [n, C, K], strides (s_n, s_c, s_k)
        va_ptr,  # tangent of A, same strides (read if HAS_VA)
        z_ptr,  # [n] int32 element of each atom
        t_ptr,  # T [E, Q, C] contiguous (read unless TANGENT and not HAS_VA)
        vt_ptr,  # tangent of T [E, Q, C] contiguous (read if HAS_VT)
        term_k_ptr,  # [Q, MAX_ORDER] int32, -1 beyond the term's order
        row_ptr_ptr,  # [R + 1] int32: the terms of row r are row_ptr[r]:row_ptr[r + 1]
        row_base_ptr,  # [R] int32
        row_stride_ptr,  # [R] int32
        out_ptr,  # [n, out_dim] contiguous
        n_atoms,
        channels,
        out_dim,
        s_n,
        s_c,
        s_k,
        NUM_TERMS: tl.constexpr,
        MAX_ORDER: tl.constexpr,
        MAX_ROW_TERMS: tl.constexpr,
        TANGENT: tl.constexpr,
        HAS_VA: tl.constexpr,
        HAS_VT: tl.constexpr,
        ACC_FP64: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        atoms = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        row = tl.program_id(2)
        atom_ok = atoms < n_atoms
        mask = atom_ok[:, None] & (chans[None, :] < channels)
        atoms64 = atoms.to(tl.int64)
        a_off = atoms64[:, None] * s_n + chans[None, :] * s_c  # [BN, BC]
        z = tl.load(z_ptr + atoms, mask=atom_ok, other=0).to(tl.int64)
        t_off = z[:, None] * NUM_TERMS * channels + chans[None, :]  # [BN, BC]
        acc_dtype = tl.float64 if ACC_FP64 else tl.float32
        # tl.full, not tl.zeros (a jitted helper the interpreter may refuse, as tl.sum)
        acc = tl.full([BLOCK_N, BLOCK_C], 0.0, dtype=acc_dtype)
        start = tl.load(row_ptr_ptr + row)
        end = tl.load(row_ptr_ptr + row + 1)
        # (a constexpr bound and a test: Triton 3.5's interpreter cannot take a loaded
        # scalar as a loop bound under numpy >= 2.3)
        for t in range(0, MAX_ROW_TERMS):
            q = start + t
            if q < end:
                p = tl.full([BLOCK_N, BLOCK_C], 1.0, dtype=acc_dtype)
                dp = tl.full([BLOCK_N, BLOCK_C], 0.0, dtype=acc_dtype)
                for xi in tl.static_range(MAX_ORDER):
                    k = tl.load(term_k_ptr + q * MAX_ORDER + xi)
                    use = mask & (k >= 0)
                    a = tl.load(a_ptr + a_off + k * s_k, mask=use, other=1.0).to(acc_dtype)
                    if HAS_VA:
                        va = tl.load(va_ptr + a_off + k * s_k, mask=use, other=0.0)
                        dp = dp * a + p * va.to(acc_dtype)
                    p = p * a
                if TANGENT:
                    if HAS_VA:
                        table = tl.load(t_ptr + t_off + q * channels, mask=mask, other=0.0)
                        acc += table.to(acc_dtype) * dp
                    if HAS_VT:
                        tangent = tl.load(vt_ptr + t_off + q * channels, mask=mask, other=0.0)
                        acc += tangent.to(acc_dtype) * p
                else:
                    table = tl.load(t_ptr + t_off + q * channels, mask=mask, other=0.0)
                    acc += table.to(acc_dtype) * p
        base = tl.load(row_base_ptr + row)
        stride = tl.load(row_stride_ptr + row)
        out = out_ptr + atoms64[:, None] * out_dim + base + chans[None, :] * stride
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def components_kernel(
        a_ptr,  # A [n, C, K], strides (s_n, s_c, s_k)
        va_ptr,  # tangent of A, same strides (read if HAS_VA)
        z_ptr,  # [n] int32
        t_ptr,  # T [E, Q, C] contiguous
        vt_ptr,  # tangent of T (read if HAS_VT)
        g_ptr,  # dL/dm [n, out_dim] contiguous
        term_k_ptr,  # [Q, MAX_ORDER] int32
        term_row_ptr,  # [Q] int32
        row_base_ptr,  # [R] int32
        row_stride_ptr,  # [R] int32
        factor_term_ptr,  # [F] int32: the term of each factor occurrence, sorted by k
        factor_pos_ptr,  # [F] int32: its position in the term
        k_ptr_ptr,  # [K + 1] int32: the occurrences of k are k_ptr[k]:k_ptr[k + 1]
        da_ptr,  # dA [n, C, K], strides (d_n, d_c, d_k)
        n_atoms,
        channels,
        out_dim,
        s_n,
        s_c,
        s_k,
        d_n,
        d_c,
        d_k,
        NUM_TERMS: tl.constexpr,
        MAX_ORDER: tl.constexpr,
        MAX_K_FACTORS: tl.constexpr,
        TANGENT: tl.constexpr,
        HAS_VA: tl.constexpr,
        HAS_VT: tl.constexpr,
        ACC_FP64: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        atoms = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        k = tl.program_id(2)
        atom_ok = atoms < n_atoms
        mask = atom_ok[:, None] & (chans[None, :] < channels)
        atoms64 = atoms.to(tl.int64)
        a_off = atoms64[:, None] * s_n + chans[None, :] * s_c
        g_rows = g_ptr + atoms64[:, None] * out_dim  # [BN, 1]
        z = tl.load(z_ptr + atoms, mask=atom_ok, other=0).to(tl.int64)
        t_off = z[:, None] * NUM_TERMS * channels + chans[None, :]
        acc_dtype = tl.float64 if ACC_FP64 else tl.float32
        acc = tl.full([BLOCK_N, BLOCK_C], 0.0, dtype=acc_dtype)
        start = tl.load(k_ptr_ptr + k)
        end = tl.load(k_ptr_ptr + k + 1)
        for t in range(0, MAX_K_FACTORS):
            f = start + t
            if f < end:
                q = tl.load(factor_term_ptr + f)
                i = tl.load(factor_pos_ptr + f)
                row = tl.load(term_row_ptr + q)
                base = tl.load(row_base_ptr + row)
                stride = tl.load(row_stride_ptr + row)
                g = tl.load(g_rows + base + chans[None, :] * stride, mask=mask, other=0.0)
                # (Q, dQ): the product of the other factors and its tangent; a repeated
                # factor occurs once per position, so d(A^2) = 2A comes out of the sum
                p = tl.full([BLOCK_N, BLOCK_C], 1.0, dtype=acc_dtype)
                dp = tl.full([BLOCK_N, BLOCK_C], 0.0, dtype=acc_dtype)
                for j in tl.static_range(MAX_ORDER):
                    k_j = tl.load(term_k_ptr + q * MAX_ORDER + j)
                    use = mask & (k_j >= 0) & (i != j)
                    a = tl.load(a_ptr + a_off + k_j * s_k, mask=use, other=1.0).to(acc_dtype)
                    if HAS_VA:
                        va = tl.load(va_ptr + a_off + k_j * s_k, mask=use, other=0.0)
                        dp = dp * a + p * va.to(acc_dtype)
                    p = p * a
                if TANGENT:
                    coefficient = tl.full([BLOCK_N, BLOCK_C], 0.0, dtype=acc_dtype)
                    if HAS_VA:
                        table = tl.load(t_ptr + t_off + q * channels, mask=mask, other=0.0)
                        coefficient += table.to(acc_dtype) * dp
                    if HAS_VT:
                        tangent = tl.load(vt_ptr + t_off + q * channels, mask=mask, other=0.0)
                        coefficient += tangent.to(acc_dtype) * p
                else:
                    table = tl.load(t_ptr + t_off + q * channels, mask=mask, other=0.0)
                    coefficient = table.to(acc_dtype) * p
                acc += g.to(acc_dtype) * coefficient
        out = da_ptr + atoms64[:, None] * d_n + chans[None, :] * d_c + k * d_k
        tl.store(out, acc.to(da_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def terms_kernel(
        a_ptr,  # A [n, C, K], strides (s_n, s_c, s_k)
        va_ptr,  # tangent of A (read if HAS_VA)
        z_ptr,  # [n] int32
        g_ptr,  # dL/dm [n, out_dim] contiguous
        term_k_ptr,  # [Q, MAX_ORDER] int32
        term_row_ptr,  # [Q] int32
        row_base_ptr,  # [R] int32
        row_stride_ptr,  # [R] int32
        dt_ptr,  # dT [E, Q, C] zeros, accumulation dtype
        n_atoms,
        channels,
        out_dim,
        s_n,
        s_c,
        s_k,
        NUM_TERMS: tl.constexpr,
        NUM_ELEMENTS: tl.constexpr,
        MAX_ORDER: tl.constexpr,
        TERMS: tl.constexpr,
        HAS_VA: tl.constexpr,
        REDUCE_ELEMENTS: tl.constexpr,
        ACC_FP64: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        atoms = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        first = tl.program_id(2) * TERMS
        atom_ok = atoms < n_atoms
        chan_ok = chans < channels
        mask = atom_ok[:, None] & chan_ok[None, :]
        atoms64 = atoms.to(tl.int64)
        a_off = atoms64[:, None] * s_n + chans[None, :] * s_c
        g_rows = g_ptr + atoms64[:, None] * out_dim
        z = tl.load(z_ptr + atoms, mask=atom_ok, other=0).to(tl.int64)
        acc_dtype = tl.float64 if ACC_FP64 else tl.float32
        for t in range(0, TERMS):
            q = first + t
            if q < NUM_TERMS:
                row = tl.load(term_row_ptr + q)
                base = tl.load(row_base_ptr + row)
                stride = tl.load(row_stride_ptr + row)
                g = tl.load(g_rows + base + chans[None, :] * stride, mask=mask, other=0.0)
                p = tl.full([BLOCK_N, BLOCK_C], 1.0, dtype=acc_dtype)
                dp = tl.full([BLOCK_N, BLOCK_C], 0.0, dtype=acc_dtype)
                for xi in tl.static_range(MAX_ORDER):
                    k = tl.load(term_k_ptr + q * MAX_ORDER + xi)
                    use = mask & (k >= 0)
                    a = tl.load(a_ptr + a_off + k * s_k, mask=use, other=1.0).to(acc_dtype)
                    if HAS_VA:
                        va = tl.load(va_ptr + a_off + k * s_k, mask=use, other=0.0)
                        dp = dp * a + p * va.to(acc_dtype)
                    p = p * a
                if HAS_VA:  # noqa: SIM108 (a constexpr branch, kept plain for Triton)
                    contribution = g.to(acc_dtype) * dp  # zero outside the mask
                else:
                    contribution = g.to(acc_dtype) * p
                if REDUCE_ELEMENTS:
                    for e in tl.static_range(NUM_ELEMENTS):
                        mine = tl.where((z == e)[:, None], contribution, 0.0)
                        total = tl.reduce(mine, 0, _combine_add)  # noqa: F821 [BC]
                        tl.atomic_add(
                            dt_ptr + (e * NUM_TERMS + q) * channels + chans, total, mask=chan_ok
                        )
                else:
                    dt = dt_ptr + (z[:, None] * NUM_TERMS + q) * channels + chans[None, :]
                    tl.atomic_add(dt, contribution, mask=mask)

    return {"rows": rows_kernel, "components": components_kernel, "terms": terms_kernel}


def interpreting() -> bool:
    """Whether Triton runs its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def component_major(features: torch.Tensor) -> torch.Tensor:
    """``[n, C, K]`` with the same values, stored ``[K, n, C]``: the kernels then read a block
    of channels at one component ``k`` as consecutive addresses."""
    return features.permute(2, 0, 1).contiguous().permute(1, 2, 0)


class ContractionIndex:
    """The loop bounds of the kernels for one :class:`SparseContraction`, built once: the
    factor occurrences sorted by k with ``k_ptr``, and the largest row and component."""

    def __init__(self, sparse: Any) -> None:
        term_k = sparse.term_k.long()  # [Q, max_order]
        terms, positions = torch.nonzero(term_k >= 0, as_tuple=True)
        ks = term_k[terms, positions]
        order = torch.argsort(ks * term_k.numel() + terms * sparse.max_order + positions)
        self.factor_term = terms[order].to(torch.int32).contiguous()
        self.factor_pos = positions[order].to(torch.int32).contiguous()
        counts = torch.bincount(ks, minlength=sparse.num_components)
        self.k_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
        self.max_k_factors = max(1, int(counts.max()))
        row_terms = torch.diff(sparse.row_ptr.long())
        self.max_row_terms = max(1, int(row_terms.max())) if row_terms.numel() else 1


def contraction_index(sparse: Any) -> ContractionIndex:
    """:class:`ContractionIndex` of ``sparse``, cached on it."""
    cached = sparse.__dict__.get("_contraction_index")
    if cached is None:
        cached = sparse.__dict__["_contraction_index"] = ContractionIndex(sparse)
    return cached


def strided_like(reference: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (same shape as ``reference``) stored with ``reference``'s strides: the
    kernels read A and its tangent with one set of strides."""
    if tensor.stride() == reference.stride():
        return tensor
    copy = torch.empty_strided(
        reference.shape, reference.stride(), dtype=tensor.dtype, device=tensor.device
    )
    return copy.copy_(tensor)


def _grid(n: int, C: int, third: int, atoms: int = BLOCK_ATOMS) -> tuple[int, int, int]:
    return (-(-n // atoms), -(-C // BLOCK_CHANNELS), third)


def rows(
    features: torch.Tensor,  # A [n, C, K]
    elements: torch.Tensor,  # [n] int32
    tables: torch.Tensor,  # T [E, Q, C]
    sparse: Any,
    out_dtype: torch.dtype,
    d_features: torch.Tensor | None = None,  # vA [n, C, K]
    d_tables: torch.Tensor | None = None,  # vT [E, Q, C]
) -> torch.Tensor:  # [n, out_dim]
    """The forward ``m(A, T)``, or with ``d_features``/``d_tables`` its tangent
    ``dm = dm/dA vA + dm/dT vT``."""
    n, C, _ = features.shape
    tangent = d_features is not None or d_tables is not None
    out = features.new_zeros(n, sparse.out_dim, dtype=out_dtype)  # rows without terms: 0
    if sparse.num_rows == 0:
        return out
    tables = tables.contiguous()
    va = features if d_features is None else strided_like(features, d_features)
    vt = tables if d_tables is None else d_tables.contiguous()
    _kernels(interpreting())["rows"][_grid(n, C, sparse.num_rows)](
        features,
        va,
        elements,
        tables,
        vt,
        sparse.term_k,
        sparse.row_ptr,
        sparse.row_base,
        sparse.row_stride,
        out,
        n,
        C,
        sparse.out_dim,
        *features.stride(),
        NUM_TERMS=sparse.num_terms,
        MAX_ORDER=sparse.max_order,
        MAX_ROW_TERMS=contraction_index(sparse).max_row_terms,
        TANGENT=tangent,
        HAS_VA=d_features is not None,
        HAS_VT=d_tables is not None,
        ACC_FP64=tables.dtype == torch.float64,
        BLOCK_N=BLOCK_ATOMS,
        BLOCK_C=BLOCK_CHANNELS,
    )
    return out


def components(
    features: torch.Tensor,  # A [n, C, K]
    elements: torch.Tensor,  # [n] int32
    tables: torch.Tensor,  # T [E, Q, C]
    grad_out: torch.Tensor,  # g = dL/dm [n, out_dim]
    sparse: Any,
    d_features: torch.Tensor | None = None,  # vA [n, C, K]
    d_tables: torch.Tensor | None = None,  # vT [E, Q, C]
) -> torch.Tensor:  # [n, C, K], A's dtype and strides
    """``dL/dA`` (the first derivative); with ``d_features``/``d_tables``, its tangent in
    ``(vA, vT)`` at fixed g (the A part of the second derivative)."""
    n, C, K = features.shape
    tangent = d_features is not None or d_tables is not None
    index = contraction_index(sparse)
    out = torch.empty_strided(
        features.shape, features.stride(), dtype=features.dtype, device=features.device
    )
    tables = tables.contiguous()
    va = features if d_features is None else strided_like(features, d_features)
    vt = tables if d_tables is None else d_tables.contiguous()
    _kernels(interpreting())["components"][_grid(n, C, K)](
        features,
        va,
        elements,
        tables,
        vt,
        grad_out.contiguous(),
        sparse.term_k,
        sparse.term_row32,
        sparse.row_base,
        sparse.row_stride,
        index.factor_term,
        index.factor_pos,
        index.k_ptr,
        out,
        n,
        C,
        sparse.out_dim,
        *features.stride(),
        *out.stride(),
        NUM_TERMS=sparse.num_terms,
        MAX_ORDER=sparse.max_order,
        MAX_K_FACTORS=index.max_k_factors,
        TANGENT=tangent,
        HAS_VA=d_features is not None,
        HAS_VT=d_tables is not None,
        ACC_FP64=tables.dtype == torch.float64,
        BLOCK_N=BLOCK_ATOMS,
        BLOCK_C=BLOCK_CHANNELS,
    )
    return out


def terms(
    features: torch.Tensor,  # A [n, C, K]
    elements: torch.Tensor,  # [n] int32
    grad_out: torch.Tensor,  # g [n, out_dim]
    sparse: Any,
    num_elements: int,
    dtype: torch.dtype,  # of the tables (and the accumulation)
    d_features: torch.Tensor | None = None,  # vA [n, C, K]
) -> torch.Tensor:  # [E, Q, C]
    """``dL/dT`` (first derivative); with ``d_features``, its tangent in vA at fixed g (the
    T part of the second derivative: dL/dT does not depend on T)."""
    n, C, _ = features.shape
    out = torch.zeros(num_elements, sparse.num_terms, C, dtype=dtype, device=features.device)
    va = features if d_features is None else strided_like(features, d_features)
    chunks = -(-sparse.num_terms // TERMS_PER_PROGRAM)
    _kernels(interpreting())["terms"][_grid(n, C, chunks, TERMS_BLOCK_ATOMS)](
        features,
        va,
        elements,
        grad_out.contiguous(),
        sparse.term_k,
        sparse.term_row32,
        sparse.row_base,
        sparse.row_stride,
        out,
        n,
        C,
        sparse.out_dim,
        *features.stride(),
        NUM_TERMS=sparse.num_terms,
        NUM_ELEMENTS=num_elements,
        MAX_ORDER=sparse.max_order,
        TERMS=TERMS_PER_PROGRAM,
        HAS_VA=d_features is not None,
        REDUCE_ELEMENTS=num_elements <= MAX_REDUCED_ELEMENTS,
        ACC_FP64=dtype == torch.float64,
        BLOCK_N=TERMS_BLOCK_ATOMS,
        BLOCK_C=BLOCK_CHANNELS,
        num_warps=8,
    )
    return out


# --- one custom operator for the three kernels, so that make_fx records each launch as one
# node (the compiled training step and potential) and torch.export sees its shapes. The
# SparseContraction travels by id through a registry, like the convolution's plans.
_SPARSE: dict[int, Any] = {}
ROWS, COMPONENTS, TERMS = 0, 1, 2


def _sparse_id(sparse: Any) -> int:
    key = id(sparse)
    _SPARSE[key] = sparse  # kept alive: a handful per model, built once
    contraction_index(sparse)  # built outside any trace
    return key


@torch.library.custom_op("macelab::contraction", mutates_args=())
def _contraction_op(
    sparse_id: int,
    kind: int,
    tensors: list[Optional[torch.Tensor]],  # noqa: UP045 (A, z, T, g, vA, vT)
    out_dtype: torch.dtype,
    num_elements: int,
) -> torch.Tensor:
    a, z, t, g, va, vt = tensors
    sparse = _SPARSE[sparse_id]
    if kind == ROWS:
        return rows(a, z, t, sparse, out_dtype, d_features=va, d_tables=vt)
    if kind == COMPONENTS:
        return components(a, z, t, g, sparse, d_features=va, d_tables=vt)
    return terms(a, z, g, sparse, num_elements, out_dtype, d_features=va)


@_contraction_op.register_fake
def _(
    sparse_id: int,
    kind: int,
    tensors: list[Optional[torch.Tensor]],  # noqa: UP045
    out_dtype: torch.dtype,
    num_elements: int,
) -> torch.Tensor:
    a = tensors[0]
    sparse = _SPARSE[sparse_id]
    if kind == ROWS:
        return a.new_empty(a.shape[0], sparse.out_dim, dtype=out_dtype)
    if kind == COMPONENTS:
        return torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device=a.device)
    return a.new_empty(num_elements, sparse.num_terms, a.shape[1], dtype=out_dtype)


def launch(
    kind: int,
    sparse: Any,
    features: torch.Tensor,
    elements: torch.Tensor,
    tables: torch.Tensor | None = None,
    grad_out: torch.Tensor | None = None,
    d_features: torch.Tensor | None = None,
    d_tables: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    num_elements: int = 0,
) -> torch.Tensor:
    """One of the kernels (:data:`ROWS`, :data:`COMPONENTS`, :data:`TERMS`) through the
    custom operator; ``out_dtype``: the output's (ROWS) or the tables' (TERMS) dtype."""
    tensors = [features, elements, tables, grad_out, d_features, d_tables]
    dtype = features.dtype if out_dtype is None else out_dtype
    return _contraction_op(_sparse_id(sparse), kind, tensors, dtype, num_elements)
