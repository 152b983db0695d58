"""Choosing how the symmetric contractions of a model are computed.

``set_backend(model, "triton")`` gives every :class:`SymmetricContraction` (all its output
irreps in one kernel) and every :class:`IrrepContraction` of ``model`` a forward of that
backend ("cueq": the SymmetricContractions only, through NVIDIA cuEquivariance), as an
instance attribute; parameters, buffers and state-dict keys are untouched, and
``set_backend(model, "e3nn")`` removes it again (the class's dense einsum forward).
"triton" also fuses each interaction's tensor product and neighbour sum (Eq. 8) into
generated Triton kernels (:mod:`macelab.kernels.triton_conv`); ``convolution=`` switches
that separately, so the fused convolution also runs beside the e3nn or cueq contraction.
"""

from __future__ import annotations

import functools

import torch

from macelab.kernels.cueq_contraction import cueq_available, cueq_contract
from macelab.kernels.sparse_cg import sparse_contraction, weight_tables
from macelab.kernels.sparse_torch import sparse_contract
from macelab.kernels.triton_contraction import triton_available, triton_contract
from macelab.model.interaction import Interaction, warn_unused_edge_chunk
from macelab.model.symmetric_contraction import IrrepContraction, SymmetricContraction

BACKENDS = ("e3nn", "sparse_torch", "triton", "cueq")
_ATTRIBUTE = "_contraction_backend"


def check_backend(backend: str) -> None:
    """Raise ValueError if ``backend`` is unknown or cannot run here."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown contraction backend {backend!r}; choose one of {BACKENDS}")
    if backend == "triton" and (reason := triton_available()) is not None:
        raise ValueError(f"the 'triton' contraction backend cannot run: {reason}")
    if backend == "cueq" and (reason := cueq_available()) is not None:
        raise ValueError(f"the 'cueq' contraction backend cannot run: {reason}")


def contract(
    module: torch.nn.Module, backend: str, features: torch.Tensor, node_attrs: torch.Tensor
) -> torch.Tensor:
    """The forward of ``module`` (A ``[n, C, K]``, one-hot ``[n, E]`` -> ``[n, out_dim]``)
    through ``backend`` ("sparse_torch", "triton" or "cueq")."""
    if backend == "cueq":
        return cueq_contract(module, features, node_attrs)
    sparse = sparse_contraction(module)
    tables = weight_tables(module, sparse)
    if backend == "triton":
        return triton_contract(features, node_attrs, tables, sparse)
    return sparse_contract(features, node_attrs, tables, sparse)


def set_backend(
    model: torch.nn.Module, backend: str, convolution: bool | None = None
) -> torch.nn.Module:
    """Compute every symmetric contraction in ``model`` with ``backend`` ("e3nn", the dense
    default; "sparse_torch"; "triton"; "cueq"). Returns ``model`` (changed in place).

    ``convolution`` (default: True for "triton", else False): compute each interaction's
    tensor product and neighbour sum in the fused Triton kernels
    (:mod:`macelab.kernels.triton_conv`), whichever backend contracts; ValueError where
    Triton cannot run.
    """
    check_backend(backend)
    fused = backend == "triton" if convolution is None else bool(convolution)
    if fused and (reason := triton_available()) is not None:
        raise ValueError(f"the fused convolution (a Triton kernel) cannot run: {reason}")
    interactions = [m for m in model.modules() if isinstance(m, Interaction)]
    for module in interactions:
        module.conv_backend = "triton" if fused else "e3nn"
    warn_unused_edge_chunk(interactions)
    for module in model.modules():
        if not isinstance(module, SymmetricContraction | IrrepContraction):
            continue
        if backend == "cueq" and not isinstance(module, SymmetricContraction):
            backend_here = "e3nn"  # cuEquivariance contracts all output irreps at once
        else:
            backend_here = backend
        # a precision policy's stage wrapper (apply_policy) is taken off and put back
        # around the new forward, so the order of set_backend and apply_policy is free
        precision = module.__dict__.pop("_macelab_precision", None)
        check = module.__dict__.pop("_macelab_check", None)
        module.__dict__.pop("_macelab_unwrapped_forward", None)
        module.__dict__.pop("forward", None)
        module.__dict__.pop(_ATTRIBUTE, None)
        if backend_here != "e3nn":
            module.forward = functools.partial(contract, module, backend_here)
            module.__dict__[_ATTRIBUTE] = backend_here
        if precision is not None:
            from macelab.precision.policy import _wrap

            _wrap(module, precision, check)
    return model


def get_backend(module: torch.nn.Module) -> str:
    """The backend of one contraction module ("e3nn" unless :func:`set_backend` chose one)."""
    return module.__dict__.get(_ATTRIBUTE, "e3nn")
