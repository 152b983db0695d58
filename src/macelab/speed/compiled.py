"""Energies and forces as one fused program: ``make_fx`` through the force backward, then
Inductor, then (on CUDA) replay from a CUDA graph.

``torch.compile`` alone cannot fuse a force field's forward with its force backward: Dynamo
stops at ``torch.autograd.grad``. Tracing with ``make_fx`` instead records the dispatcher's
aten operations of the whole call, the backward included, as one graph with every input a
graph input; Inductor then fuses it into far fewer kernels (Triton on the GPU, C++ on the
CPU). The traced program has fixed shapes, so it is built once per shape bucket of
:mod:`macelab.speed.padding` (tens of seconds for the paper model on an H100) and cached.

The model is rebuilt without TorchScript (``torch.fx`` code, which the tracer can enter),
with the fused convolution if the model has it (a custom operator to the tracer), and
with frozen weights: this is an inference path (MD, evaluation). Training keeps the eager
model (:class:`macelab.speed.train_step.GraphedTrainStep` removes its launch overhead).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable
from typing import Any

import e3nn
import torch

from macelab.dtypes import default_dtype
from macelab.kernels import get_backend, set_backend
from macelab.kernels.contraction_kernels import contraction_index
from macelab.kernels.conv_plan import conv_plan
from macelab.kernels.sparse_cg import sparse_contraction
from macelab.model import MACE
from macelab.model.interaction import Interaction
from macelab.model.stages import implementation, set_implementation
from macelab.model.symmetric_contraction import SymmetricContraction
from macelab.precision.policy import copy_policy
from macelab.speed.padding import Bucket, bucket_for, graph_sizes, pad_graph, unpad

log = logging.getLogger(__name__)

INPUT_KEYS = ("positions", "atomic_numbers", "edge_index", "unit_shifts", "cell", "batch", "ptr")


def plain_copy(model: torch.nn.Module, keep_kernels: bool = True) -> torch.nn.Module:
    """The model rebuilt with e3nn's plain ``torch.fx`` code (no TorchScript), same weights,
    frozen: what ``make_fx`` can trace. ``keep_kernels``: keep the fused convolution and the
    Triton contraction (custom operators to the tracer); False gives plain aten operations
    only (a file that must run without macelab, :mod:`macelab.export`)."""
    parameter = next(model.parameters())
    previous = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_script_fx=False)
    try:  # constants (CG, E0) built in the model's dtype
        with default_dtype(parameter.dtype):
            plain = MACE(**copy.deepcopy(model.hyperparameters))
    finally:
        e3nn.set_optimization_defaults(**previous)
    plain.load_state_dict(model.state_dict())
    copy_policy(model, plain)  # a precision policy's stages keep their dtypes
    if keep_kernels:
        _copy_convolution(model, plain)
    plain = plain.to(device=parameter.device, dtype=parameter.dtype).eval()
    if keep_kernels:
        _copy_contraction(model, plain)
    plain.requires_grad_(False)
    plain.elements.check_inputs = False  # checked by CompiledPotential before each call
    return plain


def _copy_convolution(model: torch.nn.Module, plain: torch.nn.Module) -> None:
    """The fused convolution (``runtime.fused_convolution``) carried over to the copy: its
    kernels run as one custom operator, which the tracer records whole. Plans are probed
    here, outside any trace."""

    sources = [m for m in model.modules() if isinstance(m, Interaction)]
    targets = [m for m in plain.modules() if isinstance(m, Interaction)]
    for source, target in zip(sources, targets, strict=True):
        set_implementation(target, implementation(source))
        if target.conv_backend == "triton":
            conv_plan(target.tensor_product)


def _copy_contraction(model: torch.nn.Module, plain: torch.nn.Module) -> None:
    """The Triton contraction (``runtime.backend=triton``) carried over to the copy: its
    kernels, derivatives included, are one custom operator to the tracer. Other backends
    are not: the copy contracts with e3nn's dense code, which Inductor fuses (cueq's
    operators are not traceable here). The sparse terms are built here, outside any trace,
    on the copy's device and dtype."""

    sources = [m for m in model.modules() if isinstance(m, SymmetricContraction)]
    if not sources or get_backend(sources[0]) != "triton":
        return
    fused = {m.conv_backend for m in plain.interactions} == {"triton"}
    set_backend(plain, "triton", convolution=fused)
    for module in plain.modules():
        if isinstance(module, SymmetricContraction):
            contraction_index(sparse_contraction(module))


class CompiledPotential:
    """``potential(graph) -> outputs`` like ``model(graph)``, compiled per shape bucket.

    Args:
        model: a macelab MACE (any device); it is copied, so later changes to its weights
            are not seen (build a new potential after training).
        compute_stress: also return stress and virials.
        cuda_graphs: replay each compiled program from a CUDA graph (CUDA only).
        backend: the ``torch.compile`` backend (``inductor``; ``aot_eager`` checks the
            tracing without code generation).
        context: a factory of the context the trace runs in (e.g. autocast).
        growth: bucket growth factor (fewer buckets = fewer compilations).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        compute_stress: bool = False,
        cuda_graphs: bool = True,
        backend: str = "inductor",
        context: Callable[[], contextlib.AbstractContextManager] | None = None,
        growth: float = 1.25,
    ) -> None:
        self.model = plain_copy(model)
        self.table = model.elements
        self.device = next(self.model.parameters()).device
        self.compute_stress = compute_stress
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.backend = backend
        self.context = context or contextlib.nullcontext
        self.growth = growth
        self.r_max = float(model.r_max)
        self.padding_number = int(model.elements.atomic_numbers[0])
        self.programs: dict[Bucket, Callable] = {}
        self.graphs: dict[Bucket, tuple[torch.cuda.CUDAGraph, list, list]] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None

    @property
    def num_programs(self) -> int:
        return len(self.programs)

    def output_keys(self) -> tuple[str, ...]:
        keys = ("energy", "node_energy", "forces")
        return (*keys, "stress", "virials") if self.compute_stress else keys

    def _function(self) -> Callable:
        model, keys, stress, context = (
            self.model,
            self.output_keys(),
            self.compute_stress,
            self.context,
        )

        def energy_forces(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with context():
                out = model(
                    dict(zip(INPUT_KEYS, tensors, strict=True)),
                    compute_forces=True,
                    compute_stress=stress,
                )
            return tuple(out[k] for k in keys)

        return energy_forces

    def _program(self, bucket: Bucket, inputs: list[torch.Tensor]) -> Callable:
        from torch.fx.experimental.proxy_tensor import make_fx

        program = self.programs.get(bucket)
        if program is None:  # compiled on its first call: tens of seconds, once per bucket
            log.info("compiling the potential for size bucket %s (once per bucket)", bucket)
            traced = make_fx(self._function())(*inputs)
            program = torch.compile(traced, backend=self.backend, dynamic=False, fullgraph=True)
            self.programs[bucket] = program
        return program

    def __call__(self, graph: Any) -> dict[str, torch.Tensor | None]:
        sizes = graph_sizes(graph)
        bucket = bucket_for(*sizes, growth=self.growth)
        fields = pad_graph(graph, bucket, self.r_max, self.padding_number)
        self.table.check(fields["atomic_numbers"][: sizes[0]])
        inputs = [fields[k] for k in INPUT_KEYS]
        if self.cuda_graphs:
            outputs = self._replay(bucket, inputs)
        else:
            with torch.no_grad():  # the traced program holds the backward as plain ops
                outputs = self._program(bucket, inputs)(*inputs)
        return unpad(dict(zip(self.output_keys(), outputs, strict=True)), sizes)

    def _replay(self, bucket: Bucket, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        captured = self.graphs.get(bucket)
        if captured is None:
            program = self._program(bucket, inputs)
            static = [t.clone() for t in inputs]
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.no_grad(), torch.cuda.stream(side):
                for _ in range(3):
                    program(*static)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph, pool=self.pool):
                outputs = list(program(*static))
            captured = (graph, static, outputs)
            self.graphs[bucket] = captured
        graph, static, outputs = captured
        for buffer, value in zip(static, inputs, strict=True):
            buffer.copy_(value)
        graph.replay()
        return outputs
