"""The symmetric contraction (Eq. 10-11) in fused Triton kernels, with first and second
derivatives.

:class:`TritonContraction` computes ``m = contraction(A, T)`` in one kernel (no
``[n, C, (2L+1) K^(nu-1)]`` intermediate exists); its backward is
:class:`TritonContractionBackward`, the ``(dL/dA, dL/dT)`` kernels, whose own backward (the
weight gradient of a force loss, ``create_graph=True``) is again three kernels: the tangent
of the forward for ``d/dg``, and the tangents of the two derivative kernels for ``d/dA``
and ``d/dT`` (:mod:`macelab.kernels.contraction_kernels`). Third derivatives raise.
The chain from ``T`` to the weights ``W`` is torch (:meth:`SparseContraction.element_tables`)
outside the Functions.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from macelab.kernels import contraction_kernels as kernels
from macelab.kernels.contraction_kernels import interpreting
from macelab.kernels.sparse_cg import SparseContraction

__all__ = ["TritonContraction", "interpreting", "triton_available", "triton_contract"]

# A is stored [K, n, C] for the kernels (coalesced reads of a block of channels).
COMPONENT_MAJOR = True


def triton_available() -> str | None:
    """None if the Triton backend can run here, else why not."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'macelab[kernels]')"
    if not torch.cuda.is_available() and not interpreting():
        return "triton needs a CUDA GPU, or TRITON_INTERPRET=1 to run its interpreter on CPU"
    return None


class TritonContraction(torch.autograd.Function):
    """``(A [n, C, K], T [E, Q, C]) -> m [n, out_dim]`` in the forward kernel (A in the
    kernels' layout and T contiguous, as :func:`triton_contract` passes them)."""

    @staticmethod
    def forward(
        ctx: Any,
        features: torch.Tensor,
        tables: torch.Tensor,
        elements: torch.Tensor,
        sparse: SparseContraction,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        ctx.save_for_backward(features, tables, elements)
        ctx.sparse = sparse
        return kernels.launch(kernels.ROWS, sparse, features, elements, tables, out_dtype=out_dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        features, tables, elements = ctx.saved_tensors
        want_features, want_tables = ctx.needs_input_grad[:2]
        d_features, d_tables = TritonContractionBackward.apply(
            grad_out, features, tables, elements, ctx.sparse, want_features, want_tables
        )
        return d_features, d_tables, None, None, None


class TritonContractionBackward(torch.autograd.Function):
    """``(g, A, T) -> (dL/dA, dL/dT)``, each None unless asked; its backward is
    :class:`TritonContractionSecond`."""

    @staticmethod
    def forward(
        ctx: Any,
        grad_out: torch.Tensor,
        features: torch.Tensor,
        tables: torch.Tensor,
        elements: torch.Tensor,
        sparse: SparseContraction,
        want_features: bool,
        want_tables: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        ctx.set_materialize_grads(False)
        grad_out = grad_out.contiguous()
        ctx.save_for_backward(grad_out, features, tables, elements)
        ctx.sparse = sparse
        d_features = d_tables = None
        if want_features:
            d_features = kernels.launch(
                kernels.COMPONENTS, sparse, features, elements, tables, grad_out
            )
        if want_tables:
            d_tables = kernels.launch(
                kernels.TERMS, sparse, features, elements, grad_out=grad_out,
                out_dtype=tables.dtype, num_elements=tables.shape[0],
            )  # fmt: skip
        return d_features, d_tables

    @staticmethod
    def backward(
        ctx: Any, v_features: torch.Tensor | None, v_tables: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        grad_out, features, tables, elements = ctx.saved_tensors
        wanted = tuple(ctx.needs_input_grad[:3])
        d_grad, d_features, d_tables = TritonContractionSecond.apply(
            v_features, v_tables, grad_out, features, tables, elements, ctx.sparse, wanted
        )
        return d_grad, d_features, d_tables, None, None, None, None


class TritonContractionSecond(torch.autograd.Function):
    """``(vA, vT; g, A, T) -> (d/dg, d/dA, d/dT)`` of ``<vA, dL/dA> + <vT, dL/dT>``: the
    second derivatives. dL/dA is linear in g and T and dL/dT linear in g and independent of
    T, so every part is one tangent kernel. Not differentiable again: its backward raises
    (a Function, not ``once_differentiable``, so that autograd cannot prune the error away
    when a third derivative is asked of the inputs)."""

    @staticmethod
    def forward(
        ctx: Any,
        v_features: torch.Tensor | None,
        v_tables: torch.Tensor | None,
        grad_out: torch.Tensor,
        features: torch.Tensor,
        tables: torch.Tensor,
        elements: torch.Tensor,
        sparse: SparseContraction,
        wanted: tuple[bool, bool, bool],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        want_g, want_features, want_tables = wanted
        if v_features is not None:
            v_features = v_features.to(features.dtype)
        if v_tables is not None:
            v_tables = v_tables.to(tables.dtype)
        none = v_features is None and v_tables is None
        d_grad = d_features = d_tables = None
        if want_g and not none:
            d_grad = kernels.launch(
                kernels.ROWS, sparse, features, elements, tables, None, v_features, v_tables,
                out_dtype=grad_out.dtype,
            )  # fmt: skip
        if want_features and not none:
            d_features = kernels.launch(
                kernels.COMPONENTS, sparse, features, elements, tables, grad_out, v_features,
                v_tables,
            )  # fmt: skip
        if want_tables and v_features is not None:
            d_tables = kernels.launch(
                kernels.TERMS, sparse, features, elements, grad_out=grad_out,
                d_features=v_features, out_dtype=tables.dtype, num_elements=tables.shape[0],
            )  # fmt: skip
        return d_grad, d_features, d_tables

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[None, ...]:
        raise RuntimeError(
            "third derivatives of the Triton symmetric contraction are not implemented (its "
            "kernels give values, forces and the force loss's weight gradient); compute "
            "this with runtime.backend=e3nn or sparse_torch"
        )


def triton_contract(
    features: torch.Tensor,
    node_attrs: torch.Tensor,
    weight_tables: list[torch.Tensor],
    sparse: SparseContraction,
) -> torch.Tensor:
    """Eq. 10-11 in the Triton kernels: A ``[n, C, K]`` -> ``[n, out_dim]``; ``node_attrs``
    must be one-hot (the kernels gather the weights of each atom's element)."""
    if sparse.num_terms == 0:
        return features.new_zeros(features.shape[0], sparse.out_dim)
    out_dtype = torch.promote_types(features.dtype, weight_tables[0].dtype)
    tables = sparse.element_tables(weight_tables)
    elements = node_attrs.argmax(dim=1).to(torch.int32)
    # the layout change is recorded by autograd outside the Functions, so that the tensor
    # they save is the one whose gradient the second derivative reaches
    features = kernels.component_major(features) if COMPONENT_MAJOR else features.contiguous()
    tables = tables.contiguous()
    return TritonContraction.apply(features, tables, elements, sparse, out_dtype)
