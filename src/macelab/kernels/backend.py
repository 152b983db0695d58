"""Choosing how the symmetric contractions and convolutions of a model are computed.

``set_backend(model, "triton")`` gives every :class:`SymmetricContraction` (all its output
irreps in one kernel) and every :class:`IrrepContraction` of ``model`` the implementation
subclass of that backend ("cueq": the SymmetricContractions only, through NVIDIA
cuEquivariance); parameters, buffers and state-dict keys are untouched, and
``set_backend(model, "e3nn")`` puts the reference classes back (the dense einsum forward).
"triton" also swaps each :class:`Interaction` for :class:`FusedInteraction`, its tensor
product and neighbour sum (Eq. 8) in generated Triton kernels
(:mod:`macelab.kernels.triton_conv`); ``convolution=`` switches that separately, so the
fused convolution also runs beside the e3nn or cueq contraction.

Classes are swapped with :func:`macelab.model.stages.set_implementation`, which keeps any
layer over a stage (a precision policy's), so the order of ``set_backend`` and a policy is
free. Nothing assigns ``forward``.
"""

from __future__ import annotations

import torch

from macelab.kernels.cueq_contraction import cueq_available, cueq_contract
from macelab.kernels.fused_interaction import FusedInteraction
from macelab.kernels.sparse_cg import sparse_contraction, weight_tables
from macelab.kernels.sparse_torch import sparse_contract
from macelab.kernels.triton_contraction import triton_available, triton_contract
from macelab.model.interaction import Interaction, warn_unused_edge_chunk
from macelab.model.stages import implementation, set_implementation
from macelab.model.symmetric_contraction import IrrepContraction, SymmetricContraction

BACKENDS = ("e3nn", "sparse_torch", "triton", "cueq")


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


class KernelContraction(torch.nn.Module):
    """Mixin of the contraction implementations: the forward through ``contraction_backend``."""

    contraction_backend = "e3nn"

    def forward(self, features: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        return contract(self, self.contraction_backend, features, node_attrs)


class SparseTorchSymmetricContraction(KernelContraction, SymmetricContraction):
    """Eq. 10-11 for all output irreps from the sparse Clebsch-Gordan terms, in torch ops."""

    contraction_backend = "sparse_torch"


class SparseTorchIrrepContraction(KernelContraction, IrrepContraction):
    """Eq. 10-11 for one output irrep from the sparse Clebsch-Gordan terms, in torch ops."""

    contraction_backend = "sparse_torch"


class TritonSymmetricContraction(KernelContraction, SymmetricContraction):
    """Eq. 10-11 for all output irreps in one Triton kernel."""

    contraction_backend = "triton"


class TritonIrrepContraction(KernelContraction, IrrepContraction):
    """Eq. 10-11 for one output irrep in a Triton kernel."""

    contraction_backend = "triton"


class CueqSymmetricContraction(KernelContraction, SymmetricContraction):
    """Eq. 10-11 for all output irreps through NVIDIA cuEquivariance."""

    contraction_backend = "cueq"


# (backend, reference class) -> implementation class; absent: the reference computes
IMPLEMENTATIONS: dict[tuple[str, type], type] = {
    ("sparse_torch", SymmetricContraction): SparseTorchSymmetricContraction,
    ("sparse_torch", IrrepContraction): SparseTorchIrrepContraction,
    ("triton", SymmetricContraction): TritonSymmetricContraction,
    ("triton", IrrepContraction): TritonIrrepContraction,
    ("cueq", SymmetricContraction): CueqSymmetricContraction,
}


def _reference(module: torch.nn.Module) -> type | None:
    cls = implementation(module)
    for reference in (SymmetricContraction, IrrepContraction, Interaction):
        if issubclass(cls, reference):
            return reference
    return None


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
    interactions = []
    for module in model.modules():
        reference = _reference(module)
        if reference is Interaction:
            set_implementation(module, FusedInteraction if fused else Interaction)
            interactions.append(module)
        elif reference is not None:
            set_implementation(module, IMPLEMENTATIONS.get((backend, reference), reference))
    warn_unused_edge_chunk(interactions)
    return model


def get_backend(module: torch.nn.Module) -> str:
    """The backend of one contraction module ("e3nn" unless :func:`set_backend` chose one)."""
    return getattr(module, "contraction_backend", "e3nn")
