"""Energies and forces replayed from captured CUDA graphs: inference without launch overhead.

A MACE forward pass plus its force backward is a few thousand small kernels; for a molecule
of tens of atoms the GPU finishes each faster than Python can launch the next, so a call
costs tens of milliseconds whatever the model size (docs/results.md). A CUDA graph
records those kernels once and replays them with one launch.

:class:`GraphedPotential` wraps a model: each call pads the graph to a shape bucket
(:mod:`macelab.speed.padding`), copies it into that bucket's static buffers and replays the
bucket's graph, capturing it on first use. An MD trajectory (fixed atoms, slowly drifting
edge count) therefore reuses one or two graphs. All buckets share one memory pool.

Precision: the model runs in its parameters' dtype, inside ``context`` if one is given (for
example ``torch.autocast`` of a mixed precision); graphs are captured with it active.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from macelab.speed.padding import Bucket, bucket_for, graph_sizes, pad_graph, unpad

OUTPUT_KEYS = ("energy", "node_energy", "forces", "stress", "virials")


class _Captured:
    """One bucket: static input buffers, the graph, and the static outputs it writes."""

    def __init__(self, inputs: dict[str, Any]) -> None:
        self.inputs = inputs
        self.graph = torch.cuda.CUDAGraph()
        self.outputs: dict[str, torch.Tensor | None] = {}


class GraphedPotential:
    """A model's energies and forces (and stress) through CUDA graphs, one per shape bucket.

    Args:
        model: a macelab MACE on a CUDA device (eval mode; its weights are read at replay,
            so later in-place weight updates are seen, but not replaced parameter tensors).
        compute_stress: also return stress and virials (periodic systems).
        context: a factory of the context every call runs in (e.g. autocast), or None.
        growth: bucket growth factor; larger wastes more padding, captures fewer graphs.
        warmup: eager calls on a side stream before capture (TorchScript specialisation,
            cuBLAS workspaces).

    Outputs are those of ``model(graph)`` for the real atoms and graphs, as new tensors.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        compute_stress: bool = False,
        context: Callable[[], contextlib.AbstractContextManager] | None = None,
        growth: float = 1.25,
        warmup: int = 3,
    ) -> None:
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError(
                f"CUDA graphs need the model on a CUDA device, not {device}; call the model "
                "directly on the CPU"
            )
        self.model = model
        self.device = device
        self.compute_stress = compute_stress
        self.context = context or contextlib.nullcontext
        self.growth = growth
        self.warmup = warmup
        self.r_max = float(model.r_max)
        self.padding_number = int(model.elements.atomic_numbers[0])
        self.pool = torch.cuda.graph_pool_handle()
        self.captured: dict[Bucket, _Captured] = {}

    @property
    def num_graphs_captured(self) -> int:
        return len(self.captured)

    def __call__(self, graph: Any) -> dict[str, torch.Tensor | None]:
        sizes = graph_sizes(graph)
        bucket = bucket_for(*sizes, growth=self.growth)
        padded = pad_graph(graph, bucket, self.r_max, self.padding_number)
        entry = self.captured.get(bucket)
        if entry is None:
            entry = self._capture(bucket, padded)
        else:
            for key, buffer in entry.inputs.items():
                if isinstance(buffer, torch.Tensor):
                    buffer.copy_(padded[key])
            entry.graph.replay()
        return unpad(entry.outputs, sizes)

    def _run(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor | None]:
        with self.context():
            output = self.model(
                inputs, compute_forces=True, compute_stress=self.compute_stress, training=False
            )
        return {key: output.get(key) for key in OUTPUT_KEYS}

    def _capture(self, bucket: Bucket, padded: dict[str, Any]) -> _Captured:
        entry = _Captured({k: v.clone() if torch.is_tensor(v) else v for k, v in padded.items()})
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._run(entry.inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        with torch.cuda.graph(entry.graph, pool=self.pool):
            entry.outputs = self._run(entry.inputs)
        entry.graph.replay()
        self.captured[bucket] = entry
        return entry
