"""Eq. 8 fused: the channel-wise tensor product and the neighbour sum in one Triton kernel.

:func:`fused_neighbour_sum` computes ``sum_{j in N(i)} R_ji * (Y(r_ji) (x) h_j)`` straight
into ``[n_atoms, irreps_mid.dim]`` without the per-edge messages (``[n_edges, 71 C]`` for the
paper's second layer) or e3nn's per-edge intermediates. Kernels are generated per tensor
product (:mod:`macelab.kernels.conv_codegen`) from its probed coefficients
(:mod:`macelab.kernels.conv_plan`), compiled once per plan, kind and dtype, and cached on
disk (Triton's ``jit`` needs a source file; ``MACELAB_CACHE`` or ``~/.cache/macelab``).

Derivatives to any order. The operation is the derivative ``dPhi/dG`` of the 4-linear form
``Phi(Y, h, R, G)`` (conv_codegen); the derivative of ``<U, dPhi/dX>`` with respect to
another argument Z is ``dPhi/dZ`` evaluated with X replaced by U. So one autograd Function,
:class:`_Partial` (which partial derivatives to compute, of which arguments), has a backward
made of calls to itself: forces (first backward: dPhi/dh, dPhi/dY, dPhi/dR, the last two in
one edge kernel) and the weight gradient of a force loss (double backward) all run in the
same three generated kernels.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from macelab.kernels.conv_codegen import kernel_source
from macelab.kernels.conv_plan import ConvPlan
from macelab.kernels.triton_contraction import interpreting

Y, H, R, G = 0, 1, 2, 3  # argument slots of Phi


@dataclass(frozen=True)
class ConvGraph:
    """The edges in the two orders the kernels walk: by receiver (forward, dPhi/dG) and
    by sender (dPhi/dh). Built with device ops only (no host synchronisation)."""

    sender: torch.Tensor  # [E] int64
    receiver: torch.Tensor  # [E] int64
    by_receiver: torch.Tensor  # [E] edge ids sorted by receiver
    receiver_ptr: torch.Tensor  # [n + 1] CSR offsets into by_receiver
    by_sender: torch.Tensor  # [E]
    sender_ptr: torch.Tensor  # [n + 1]
    num_nodes: int

    @classmethod
    def build(cls, sender: torch.Tensor, receiver: torch.Tensor, num_nodes: int) -> ConvGraph:
        nodes = torch.arange(num_nodes + 1, device=sender.device)
        by_receiver = torch.argsort(receiver, stable=True)
        by_sender = torch.argsort(sender, stable=True)
        return cls(
            sender=sender.contiguous(),
            receiver=receiver.contiguous(),
            by_receiver=by_receiver,
            receiver_ptr=torch.searchsorted(receiver[by_receiver], nodes),
            by_sender=by_sender,
            sender_ptr=torch.searchsorted(sender[by_sender], nodes),
            num_nodes=num_nodes,
        )

    def index(self) -> list[torch.Tensor]:
        """The index tensors, in field order (the custom operator's ``graph`` argument)."""
        fields = (self.sender, self.receiver, self.by_receiver, self.receiver_ptr)
        return [*fields, self.by_sender, self.sender_ptr]

    @classmethod
    def from_index(cls, index: list[torch.Tensor]) -> ConvGraph:
        """The inverse of :meth:`index` (contiguous: Inductor may hand over other strides)."""
        sender, receiver, by_receiver, receiver_ptr, by_sender, sender_ptr = (
            t.contiguous() for t in index
        )
        n = len(receiver_ptr) - 1
        return cls(sender, receiver, by_receiver, receiver_ptr, by_sender, sender_ptr, n)

    def max_degree(self, ptr: torch.Tensor) -> int:
        """Largest number of edges per atom (host sync; the interpreter's loop bound)."""
        return int((ptr[1:] - ptr[:-1]).max()) if self.num_nodes else 0


def _cache_dir() -> Path:
    root = os.environ.get("MACELAB_CACHE") or Path.home() / ".cache" / "macelab"
    path = Path(root) / "conv_kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: a temporary directory
        path = Path(tempfile.gettempdir()) / "macelab_conv_kernels"
        path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def _kernel(
    plan: ConvPlan, kind: str, need_dy: bool, need_dr: bool, fp64: bool, interpret: bool
) -> Any:
    """The jitted kernel for one plan and kind, from a generated source file."""
    source = kernel_source(plan, kind, need_dy, need_dr, fp64, interpret)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    path = _cache_dir() / f"conv_{kind}_{digest}.py"
    if not path.exists() or path.read_text() != source:
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(source)
        partial.replace(path)  # atomic: concurrent processes never import half a file
    spec = importlib.util.spec_from_file_location(f"macelab_conv_{kind}_{digest}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, f"conv_{kind}")


def _block_c(channels: int) -> int:
    return max(16, min(64, 1 << (channels - 1).bit_length()))


def _num_warps(block_c: int) -> int:
    return max(1, block_c // 32)


# Plans by number: the custom operator below takes a plan as an int (its schema has no
# Python objects); a number is valid in the process that registered it, as a traced
# program is.
_PLAN_IDS: dict[ConvPlan, int] = {}
_PLANS: list[ConvPlan] = []


def _plan_id(plan: ConvPlan) -> int:
    if plan not in _PLAN_IDS:
        _PLAN_IDS[plan] = len(_PLANS)
        _PLANS.append(plan)
    return _PLAN_IDS[plan]


def _partials(
    plan: ConvPlan, graph: ConvGraph, wanted: tuple[int, ...], args: list[torch.Tensor | None]
) -> list[torch.Tensor]:
    """``dPhi/dX`` for each slot X in ``wanted`` (without autograd), in float32 or float64.

    Runs as the custom operator ``macelab::conv_partials``, so that ``make_fx`` and Inductor
    (:mod:`macelab.speed.compiled`, :mod:`macelab.speed.compiled_train`) record one opaque
    call with known output shapes instead of failing on the kernel launches.
    """
    return torch.ops.macelab.conv_partials(_plan_id(plan), list(wanted), args, graph.index())


def _output_shapes(plan: ConvPlan, n: int, n_edges: int) -> dict[int, tuple[int, int]]:
    return {
        Y: (n_edges, plan.sh_dim),
        H: (n, plan.node_dim),
        R: (n_edges, plan.num_paths * plan.channels),
        G: (n, plan.mid_dim),
    }


def _accumulator_dtype(args: list[torch.Tensor | None]) -> torch.dtype:
    fp64 = any(a is not None and a.dtype == torch.float64 for a in args)
    return torch.float64 if fp64 else torch.float32


@torch.library.custom_op("macelab::conv_partials", mutates_args=())
def _conv_partials(
    plan_id: int,
    wanted: list[int],
    args: list[Optional[torch.Tensor]],  # noqa: UP045 (Y, h, R, G; the schema needs Optional)
    graph: list[torch.Tensor],  # ConvGraph.index()
) -> list[torch.Tensor]:
    return _launch(_PLANS[plan_id], ConvGraph.from_index(graph), tuple(wanted), args)


@_conv_partials.register_fake
def _(
    plan_id: int,
    wanted: list[int],
    args: list[Optional[torch.Tensor]],  # noqa: UP045
    graph: list[torch.Tensor],
) -> list[torch.Tensor]:
    sender, receiver_ptr = graph[0], graph[3]
    shapes = _output_shapes(_PLANS[plan_id], receiver_ptr.shape[0] - 1, sender.shape[0])
    dtype = _accumulator_dtype(args)
    return [sender.new_empty(shapes[slot], dtype=dtype) for slot in wanted]


def _launch(
    plan: ConvPlan, graph: ConvGraph, wanted: tuple[int, ...], args: list[torch.Tensor | None]
) -> list[torch.Tensor]:
    """The kernels of :func:`_partials`."""
    dtype = _accumulator_dtype(args)
    fp64 = dtype == torch.float64
    device = next(a for a in args if a is not None).device
    y, h, r, g = (None if a is None else a.contiguous() for a in args)
    n, n_edges = graph.num_nodes, graph.sender.shape[0]
    shapes = _output_shapes(plan, n, n_edges)
    outputs = {slot: torch.zeros(shapes[slot], dtype=dtype, device=device) for slot in wanted}
    if n_edges == 0 or n == 0:
        return [outputs[slot] for slot in wanted]
    block = _block_c(plan.channels)
    channel_blocks = -(-plan.channels // block)
    interpret = interpreting()
    dummy = outputs[wanted[0]]

    def launch(
        kind: str,
        grid: tuple[int, ...],
        out: Any,
        out2: Any,
        perm: Any,
        ptr: Any,
        need_dy: bool = False,
        need_dr: bool = False,
    ) -> None:
        loop = graph.max_degree(ptr) if interpret and kind != "edge" else 0
        kernel = _kernel(plan, kind, need_dy, need_dr, fp64, interpret)
        kernel[grid](
            y if y is not None else dummy,
            h if h is not None else dummy,
            r if r is not None else dummy,
            g if g is not None else dummy,
            out,
            out2,
            graph.sender,
            graph.receiver,
            perm,
            ptr,
            LOOP=loop,
            BLOCK_C=block,
            num_warps=_num_warps(block),
        )

    if G in outputs:
        launch(
            "recv", (n, channel_blocks), outputs[G], dummy, graph.by_receiver, graph.receiver_ptr
        )
    if H in outputs:
        launch("send", (n, channel_blocks), outputs[H], dummy, graph.by_sender, graph.sender_ptr)
    if Y in outputs or R in outputs:
        launch(
            "edge",
            (n_edges,),
            outputs.get(R, dummy),
            outputs.get(Y, dummy),
            graph.by_receiver,
            graph.receiver_ptr,
            need_dy=Y in outputs,
            need_dr=R in outputs,
        )
    return [outputs[slot] for slot in wanted]


class _Partial(torch.autograd.Function):
    """``dPhi/dX`` for the slots X in ``wanted``; the argument in a wanted slot is used only
    by the other wanted partials (it may be None where none needs it, as G in the forward
    sum)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        plan: ConvPlan,
        graph: ConvGraph,
        wanted: tuple[int, ...],
        y: torch.Tensor | None,
        h: torch.Tensor | None,
        r: torch.Tensor | None,
        g: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        args = [y, h, r, g]
        ctx.save_for_backward(*args)
        ctx.plan, ctx.graph, ctx.wanted = plan, graph, wanted
        ctx.dtypes = [None if a is None else a.dtype for a in args]
        return tuple(_partials(plan, graph, wanted, args))

    @staticmethod
    def backward(ctx: Any, *upstream: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        args = list(ctx.saved_tensors)
        grads: list[torch.Tensor | None] = [None] * 4
        for out_slot, grad in zip(ctx.wanted, upstream, strict=True):
            # d<U, dPhi/dX>/dZ = dPhi/dZ with X replaced by U: every Z needed from this
            # output in one call, so dPhi/dY and dPhi/dR share one pass over the edges
            targets = tuple(
                slot for slot in range(4) if slot != out_slot and ctx.needs_input_grad[3 + slot]
            )
            if grad is None or not targets:
                continue
            sub = list(args)
            sub[out_slot] = grad
            terms = _Partial.apply(ctx.plan, ctx.graph, targets, *sub)
            for slot, term in zip(targets, terms, strict=True):
                grads[slot] = term if grads[slot] is None else grads[slot] + term
        cast = [g if g is None else g.to(d) for g, d in zip(grads, ctx.dtypes, strict=True)]
        return (None, None, None, *cast)


def fused_neighbour_sum(
    plan: ConvPlan,
    node_feats: torch.Tensor,  # [n, node_dim]
    edge_sh: torch.Tensor,  # [E, sh_dim]
    weights: torch.Tensor,  # [E, P * C]
    graph: ConvGraph,
) -> torch.Tensor:  # [n, mid_dim], float32 (float64 for float64 inputs)
    """``sum_{j in N(i)}`` of the weighted channel-wise tensor products (Eq. 8 before the
    linear layer and the 1/avg_num_neighbors), differentiable to any order."""
    (out,) = _Partial.apply(plan, graph, (G,), edge_sh, node_feats, weights, None)
    return out
