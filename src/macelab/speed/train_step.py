"""A training step (energy, forces with ``create_graph``, loss, backward) replayed from a
CUDA graph per shape bucket; the optimiser step runs eagerly on the graph's gradients.

At batch 5 of 27-atom molecules a MACE training step launches ~3,000 kernels and the GPU is
idle most of the time (docs/results.md). Capturing forward, force backward and the
loss's double backward in one graph removes that launch cost; the optimiser step (a few
fused ``foreach`` kernels) stays eager, so any optimiser, schedule, clipping and EMA work.

Padding (:mod:`macelab.speed.padding`) adds one padding graph without labels
(``has_* = False``, weight 0): a masked loss such as
:class:`macelab.training.loss.EnergyForcesLoss` gives the same value and gradients as on
the unpadded batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from typing import Any

import torch

from macelab.speed.padding import (
    Bucket,
    PaddedBatch,
    pad_training_batch,
    unpad,
)

# loss(output, padded batch) -> {"loss": scalar, other terms...}
Loss = Callable[[dict[str, torch.Tensor | None], PaddedBatch], dict[str, torch.Tensor]]
OUTPUT_KEYS = ("energy", "forces", "stress", "virials")
# one gradient per trainable parameter, in ``model.parameters()`` order (None: not reached)
Gradients = list[torch.Tensor | None]


class _Captured:
    def __init__(self, batch: PaddedBatch) -> None:
        self.batch = batch
        self.graph = torch.cuda.CUDAGraph()
        self.terms: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor | None] = {}
        self.grads: dict[torch.nn.Parameter, torch.Tensor] = {}


def _autocast_without_cache(device_type: str) -> contextlib.AbstractContextManager:
    """The caller's autocast again, without its weight-cast cache (which must not outlive a
    capture), or nothing if autocast is off."""
    if not torch.is_autocast_enabled(device_type):
        return contextlib.nullcontext()
    dtype = torch.get_autocast_dtype(device_type)
    return torch.autocast(device_type, dtype=dtype, cache_enabled=False)


class GraphedTrainStep:
    """``terms, output = step(batch)``: the loss terms and the real graphs' predictions,
    with every parameter's ``.grad`` filled by replaying the batch's bucket graph (captured
    on first use). Call ``optimizer.step()`` after it.

    Args:
        model: a macelab MACE on a CUDA device.
        loss: ``loss(output, padded_batch) -> {"loss": ..., ...}``; must respect the label
            masks (``EnergyForcesLoss`` does).
        compute_stress: predict stress too (periodic data with stress labels).
        growth: as :class:`macelab.speed.cuda_graphs.GraphedPotential`.
        warmup: as :class:`macelab.speed.cuda_graphs.GraphedPotential`.

    ``key`` (any hashable) separates captures that differ in something the loss reads as a
    Python constant, such as loss weights that change in stage two.

    Single device only (no DDP gradient hooks inside a graph). No autograd graph of an
    earlier eager step may still be alive at the first call (drop or ``detach`` its loss):
    its gradient-accumulation nodes belong to another stream and invalidate the capture.
    Gradients are the graph's static tensors: each replay overwrites them, so zeroing them
    in between is unnecessary (and setting them to None is undone by the next call).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss: Loss,
        *,
        compute_stress: bool = False,
        growth: float = 1.25,
        warmup: int = 3,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {self.device}")
        self.loss_fn = loss
        self.compute_stress = compute_stress
        self.growth = growth
        self.warmup = warmup
        self.r_max = float(model.r_max)
        self.padding_number = int(model.elements.atomic_numbers[0])
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.pool = torch.cuda.graph_pool_handle()
        self.captured: dict[tuple[Bucket, Hashable], _Captured] = {}

    @property
    def num_graphs_captured(self) -> int:
        return len(self.captured)

    def __call__(
        self, batch: Any, key: Hashable = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
        terms, outputs, grads = self.gradients(batch, key)
        for parameter, grad in zip(self.parameters, grads, strict=True):
            if grad is not None:
                parameter.grad = grad
        return terms, outputs

    def gradients(
        self, batch: Any, key: Hashable = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None], Gradients]:
        """As a call, but the gradients are returned (one per trainable parameter, in
        ``model.parameters()`` order; None where the loss does not reach it) instead of
        being put in ``.grad``. They are the graph's static tensors: the next replay
        overwrites them."""
        sizes, bucket, padded = pad_training_batch(
            batch, self.growth, self.r_max, self.padding_number
        )
        entry = self.captured.get((bucket, key))
        if entry is None:
            entry = self._capture(bucket, key, padded)
        else:
            for name, buffer in entry.batch.items():
                if isinstance(buffer, torch.Tensor):
                    buffer.copy_(padded[name])
            entry.graph.replay()
        grads = [entry.grads.get(p) for p in self.parameters]
        terms = {name: value.detach().clone() for name, value in entry.terms.items()}
        return terms, unpad(entry.outputs, sizes), grads

    def _forward_backward(self, batch: PaddedBatch):
        with _autocast_without_cache(self.device.type):
            output = self.model(
                batch, compute_forces=True, compute_stress=self.compute_stress, training=True
            )
        terms = self.loss_fn(output, batch)
        terms["loss"].backward()
        outputs = {k: output.get(k) for k in OUTPUT_KEYS}
        return terms, {k: v.detach() if v is not None else None for k, v in outputs.items()}

    def _capture(self, bucket: Bucket, key: Hashable, padded: PaddedBatch) -> _Captured:
        entry = _Captured(
            PaddedBatch({k: v.clone() if torch.is_tensor(v) else v for k, v in padded.items()})
        )
        saved = [p.grad for p in self.parameters]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                for p in self.parameters:
                    p.grad = None
                self._forward_backward(entry.batch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        for p in self.parameters:
            p.grad = None
        with torch.cuda.graph(entry.graph, pool=self.pool):
            entry.terms, entry.outputs = self._forward_backward(entry.batch)
        entry.grads = {p: p.grad for p in self.parameters if p.grad is not None}
        for p, grad in zip(self.parameters, saved, strict=True):
            p.grad = grad
        entry.graph.replay()
        self.captured[(bucket, key)] = entry
        return entry
