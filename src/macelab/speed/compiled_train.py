"""A whole training step (energy, forces with ``create_graph``, loss, weight gradients)
traced into one program with ``make_fx``, fused by Inductor and, on CUDA, replayed from a
CUDA graph per shape bucket.

``torch.compile`` of the model alone cannot do this: Dynamo stops at the force's
``torch.autograd.grad``, and AOTAutograd cannot differentiate the traced force backward a
second time (``aten::silu_backward`` has no derivative formula of its own in torch 2.11).
Tracing with ``make_fx`` sidesteps both: the eager autograd engine runs the force backward
and the loss's double backward while the tracer records their aten operations, so the
recorded program already *contains* the weight gradients as outputs. Inductor then compiles
it as a plain inference graph (no autograd of its own), and the optimiser step runs eagerly
on the returned gradients, so any optimiser, schedule, clipping and EMA keep working.

The weights are inputs of the program (``torch.func.functional_call`` of a plain, TorchScript-
free copy of the architecture, :func:`macelab.speed.compiled.plain_copy`); so is every field
of the padded batch. A CUDA graph therefore reads the live weights on each replay, and the
optimiser's in-place updates are seen.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

import torch

from macelab.model.stages import stage_precision
from macelab.speed.compiled import plain_copy
from macelab.speed.padding import (
    Bucket,
    PaddedBatch,
    pad_training_batch,
    unpad,
)
from macelab.speed.train_step import OUTPUT_KEYS, Gradients, Loss, _autocast_without_cache

log = logging.getLogger(__name__)


class _Program:
    """One bucket's compiled step and, on CUDA, its captured graph and static buffers."""

    def __init__(self, keys: list[str], terms: list[str], outputs: list[str]) -> None:
        self.keys = keys  # batch fields fed to the program, in order
        self.terms = terms  # loss terms returned, in order
        self.outputs = outputs  # model outputs returned, in order
        self.compiled: Callable[..., tuple[torch.Tensor, ...]] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: list[torch.Tensor] = []
        self.results: tuple[torch.Tensor, ...] = ()


class CompiledTrainStep:
    """``terms, output = step(batch)``: the loss terms and the real graphs' predictions,
    with every trainable parameter's ``.grad`` set from one compiled program. Call
    ``optimizer.step()`` after it.

    Args:
        model: a macelab MACE; its parameters are the program's inputs (not copied).
        loss: ``loss(output, padded_batch) -> {"loss": ..., ...}``; must respect the label
            masks (``EnergyForcesLoss`` does).
        compute_stress: predict stress too.
        backend: the ``torch.compile`` backend of the traced step (``inductor``;
            ``aot_eager`` checks the trace without code generation).
        cuda_graphs: replay each compiled step from a CUDA graph (CUDA only).
        context: a factory of the context the trace runs in; by default the caller's
            autocast (bf16-mixed), without its weight-cast cache, which would otherwise bake
            cast weights into the program as constants.
        growth: bucket growth factor (fewer buckets = fewer compilations).

    ``key`` (any hashable) separates programs that differ in something the loss reads as a
    Python constant (loss weights of stage two). Compiling costs tens of seconds per bucket
    and key on a GPU: worth it for data sets of fixed-size molecules (rMD17, 3BPA, AcAc),
    where a run meets a handful of buckets. Single process only (no DDP hooks).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss: Loss,
        *,
        compute_stress: bool = False,
        backend: str = "inductor",
        cuda_graphs: bool = True,
        context: Callable[[], contextlib.AbstractContextManager] | None = None,
        growth: float = 1.25,
    ) -> None:
        _check_precision(model)
        device = next(model.parameters()).device
        if backend == "inductor" and device.type != "cuda":
            raise ValueError(
                f"Inductor compiles this step for CUDA only (its CPU code generation fails on "
                f"the traced step under torch 2.13), but the model is on {device}; train on a "
                "GPU, or pass backend='aot_eager' to check the trace on a CPU"
            )
        self.model = model
        self.plain = plain_copy(model)
        self.loss_fn = loss
        self.compute_stress = compute_stress
        self.backend = backend
        self.device = device
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.context = context or (lambda: _autocast_without_cache(self.device.type))
        self.growth = growth
        self.r_max = float(model.r_max)
        self.padding_number = int(model.elements.atomic_numbers[0])
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.parameters = [p for _, p in named]
        self.pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self.programs: dict[tuple[Bucket, Hashable], _Program] = {}

    @property
    def num_programs(self) -> int:
        return len(self.programs)

    def __call__(
        self, batch: Any, key: Hashable = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
        terms, outputs, grads = self.gradients(batch, key)
        for parameter, grad in zip(self.parameters, grads, strict=True):
            parameter.grad = grad
        return terms, outputs

    def gradients(
        self, batch: Any, key: Hashable = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None], Gradients]:
        """As a call, but the gradients are returned (one per trainable parameter, in
        ``model.parameters()`` order) instead of being put in ``.grad``. With CUDA graphs
        they are the graph's static tensors: the next replay overwrites them."""
        sizes, bucket, padded = pad_training_batch(
            batch, self.growth, self.r_max, self.padding_number
        )
        self.model.elements.check(padded["atomic_numbers"][: sizes[0]])
        program = self.programs.get((bucket, key))
        started = None
        if program is None:  # tracing and compiling take tens of seconds: say so
            started = time.perf_counter()
            log.info("compiling the training step for size bucket %s (once per bucket)", bucket)
            program = self._build(padded)
            self.programs[(bucket, key)] = program
        fields = [padded[k] for k in program.keys]
        results = self._run(program, fields)
        if started is not None:
            log.info("compiled the step for %s in %.0f s", bucket, time.perf_counter() - started)
        n_terms, n_outputs = len(program.terms), len(program.outputs)
        terms = {
            k: v.detach().clone() for k, v in zip(program.terms, results[:n_terms], strict=True)
        }
        outputs = dict(zip(program.outputs, results[n_terms : n_terms + n_outputs], strict=True))
        grads = results[n_terms + n_outputs :]
        if not self.cuda_graphs:
            grads = [grad.detach() for grad in grads]
        return terms, unpad(outputs, sizes), list(grads)

    # ----------------------------------------------------------------------- building
    def _build(self, padded: PaddedBatch) -> _Program:
        from torch.fx.experimental.proxy_tensor import make_fx

        if torch.is_autocast_enabled(self.device.type):
            raise ValueError(_AUTOCAST_MESSAGE.format(what="autocast (bf16-mixed, 16-mixed)"))

        keys = [k for k, v in padded.items() if torch.is_tensor(v)]
        constants = {k: v for k, v in padded.items() if not torch.is_tensor(v)}
        program = _Program(keys, [], [k for k in OUTPUT_KEYS if self._has(k)])
        step = self._step_function(program, constants)  # names the loss terms when traced
        fields = [padded[k] for k in keys]
        traced = make_fx(step)(*self.parameters, *fields)
        program.compiled = torch.compile(
            traced, backend=self.backend, dynamic=False, fullgraph=True
        )
        return program

    def _has(self, key: str) -> bool:
        return key in ("energy", "forces") or self.compute_stress

    def _predict(self, batch: PaddedBatch, weights: dict[str, torch.Tensor]) -> dict:
        with self.context():
            return torch.func.functional_call(
                self.plain,
                weights,
                (batch,),
                {"compute_forces": True, "compute_stress": self.compute_stress, "training": True},
            )

    def _step_function(self, program: _Program, constants: dict[str, Any]) -> Callable:
        count = len(self.parameters)

        def step(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            weights = dict(zip(self.names, tensors[:count], strict=True))
            batch = PaddedBatch(zip(program.keys, tensors[count:], strict=True))
            batch.update(constants)
            output = self._predict(batch, weights)
            terms = self.loss_fn(output, batch)
            program.terms = sorted(terms)
            grads = torch.autograd.grad(terms["loss"], tensors[:count], allow_unused=True)
            grads = [
                torch.zeros_like(w) if g is None else g
                for g, w in zip(grads, tensors[:count], strict=True)
            ]
            return (
                *(terms[k].detach() for k in program.terms),
                *(output[k].detach() for k in program.outputs),
                *grads,
            )

        return step

    # ------------------------------------------------------------------------ running
    def _run(self, program: _Program, fields: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        assert program.compiled is not None
        if not self.cuda_graphs:
            with torch.no_grad(), _no_autocast(self.device.type):
                return program.compiled(*self.parameters, *fields)
        if program.graph is None:
            self._capture(program, fields)
        else:
            for buffer, value in zip(program.static, fields, strict=True):
                buffer.copy_(value)
        assert program.graph is not None
        program.graph.replay()
        return program.results

    def _capture(self, program: _Program, fields: list[torch.Tensor]) -> None:
        assert program.compiled is not None
        program.static = [f.clone() for f in fields]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad(), _no_autocast("cuda"), torch.cuda.stream(side):
            for _ in range(3):
                program.compiled(*self.parameters, *program.static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        program.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), _no_autocast("cuda"), torch.cuda.graph(program.graph, pool=self.pool):
            program.results = tuple(program.compiled(*self.parameters, *program.static))


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """The traced program holds its casts explicitly: run it with autocast off, so that
    the stages a policy keeps in fp32 are not cast down a second time."""
    return torch.autocast(device_type, enabled=False)


_AUTOCAST_MESSAGE = (
    "the compiled training step runs in the model's own dtype only, but {what} is on: "
    "e3nn's torch.fx code, which the step traces, mixes dtypes under autocast. Train with "
    "precision=32 or 64 when compiling the step, or keep the policy and use "
    "runtime.cuda_graphs=true without runtime.compile."
)


def _check_precision(model: torch.nn.Module) -> None:
    """Refuse a model with a precision policy (see ``_AUTOCAST_MESSAGE``)."""
    staged = [m for m in model.modules() if stage_precision(m) is not None]
    if staged:
        names = [getattr(m, "policy_check", None) for m in staged]
        name = next((f"precision policy {n!r}" for n in names if n), "a precision policy")
        raise ValueError(_AUTOCAST_MESSAGE.format(what=name))
