"""A training step (energy, forces with ``create_graph``, loss, backward) replayed from a
CUDA graph per shape bucket; the optimiser step runs eagerly on the graph's gradients.

At batch 5 of 27-atom molecules a MACE training step launches ~3,000 kernels and the GPU is
idle most of the time (docs/benchmarks.md). Capturing forward, force backward and the
loss's double backward in one graph removes that launch cost; the optimiser step (a few
fused ``foreach`` kernels) stays eager so any optimiser, schedule, clipping and EMA work.

Padding (:mod:`macelab.speed.padding`) adds one padding graph; :func:`padded_targets`
gives it zero weight, so the loss and every gradient equal those of the unpadded batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from macelab.speed.padding import Bucket, bucket_for, graph_sizes, pad_graph

Loss = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], torch.Tensor]


def padded_targets(
    energy: torch.Tensor,  # [n_graphs] eV
    forces: torch.Tensor,  # [n_atoms, 3] eV/Å
    atoms_per_graph: torch.Tensor,  # [n_graphs]
    bucket: Bucket,
) -> dict[str, torch.Tensor]:
    """Labels padded to ``bucket`` with masks: ``graph_mask`` [graphs], ``atom_mask``
    [atoms, 1], ``atoms_per_graph`` (1 for the padding graph), and the real counts
    ``num_graphs`` and ``num_atoms`` as 0-d tensors (so means need no host sync)."""
    n_graphs, n_atoms = energy.shape[0], forces.shape[0]
    device, dtype = forces.device, forces.dtype
    graph_mask = torch.zeros(bucket.graphs, dtype=dtype, device=device)
    graph_mask[:n_graphs] = 1.0
    atom_mask = torch.zeros(bucket.atoms, 1, dtype=dtype, device=device)
    atom_mask[:n_atoms] = 1.0
    counts = torch.ones(bucket.graphs, dtype=dtype, device=device)
    counts[:n_graphs] = atoms_per_graph.to(dtype)
    return {
        "energy": torch.cat([energy.to(dtype), energy.new_zeros(bucket.graphs - n_graphs)]),
        "forces": torch.cat([forces, forces.new_zeros(bucket.atoms - n_atoms, 3)]),
        "graph_mask": graph_mask,
        "atom_mask": atom_mask,
        "atoms_per_graph": counts,
        "num_graphs": torch.tensor(float(n_graphs), dtype=dtype, device=device),
        "num_atoms": torch.tensor(float(n_atoms), dtype=dtype, device=device),
    }


def weighted_mse(energy_weight: float, forces_weight: float) -> Loss:
    """MACE's loss on padded inputs: ``w_E mean((dE/N)^2) + w_F mean(dF^2)`` over the real
    graphs and force components only (masks), as in the unpadded batch."""

    def loss(output: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
        e_error = (output["energy"] - target["energy"]) / target["atoms_per_graph"]
        e_term = (target["graph_mask"] * e_error.square()).sum() / target["num_graphs"]
        f_error = (output["forces"] - target["forces"]) * target["atom_mask"]
        f_term = f_error.square().sum() / (3.0 * target["num_atoms"])
        return energy_weight * e_term + forces_weight * f_term

    return loss


class _Captured:
    def __init__(self, inputs: dict[str, Any], targets: dict[str, torch.Tensor]) -> None:
        self.inputs = inputs
        self.targets = targets
        self.graph = torch.cuda.CUDAGraph()
        self.loss: torch.Tensor | None = None
        self.grads: dict[torch.nn.Parameter, torch.Tensor] = {}


class GraphedTrainStep:
    """``loss = step(batch, energy, forces)``: fills every parameter's ``.grad`` by replaying
    the batch's bucket graph (captured on first use). Call ``optimizer.step()`` after it.

    Args:
        model: a macelab MACE on a CUDA device, in training mode.
        loss: ``loss(output, padded_targets) -> scalar``; must respect the masks
            (:func:`weighted_mse` does).
        context: a factory of the context the forward pass runs in (e.g. autocast).
        growth, warmup: as :class:`macelab.speed.cuda_graphs.GraphedPotential`.

    Single device only (no DDP gradient hooks inside a graph). No autograd graph of an
    earlier eager step may still be alive at the first call (drop or ``detach`` its loss):
    its gradient-accumulation nodes belong to another stream and invalidate the capture.
    Gradients are the graph's static tensors: ``optimizer.zero_grad()`` is unnecessary
    (each replay overwrites them).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss: Loss,
        *,
        context: Callable[[], contextlib.AbstractContextManager] | None = None,
        growth: float = 1.25,
        warmup: int = 3,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {self.device}")
        self.loss_fn = loss
        self.context = context or contextlib.nullcontext
        self.growth = growth
        self.warmup = warmup
        self.r_max = float(model.r_max)
        self.padding_number = int(model.elements.atomic_numbers[0])
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.pool = torch.cuda.graph_pool_handle()
        self.captured: dict[Bucket, _Captured] = {}

    @property
    def num_graphs_captured(self) -> int:
        return len(self.captured)

    def __call__(
        self, graph: Any, energy: torch.Tensor, forces: torch.Tensor, atoms_per_graph: torch.Tensor
    ) -> torch.Tensor:
        sizes = graph_sizes(graph)
        bucket = bucket_for(*sizes, growth=self.growth)
        inputs = pad_graph(graph, bucket, self.r_max, self.padding_number)
        targets = padded_targets(energy, forces, atoms_per_graph, bucket)
        entry = self.captured.get(bucket)
        if entry is None:
            entry = self._capture(bucket, inputs, targets)
        else:
            for key, buffer in entry.inputs.items():
                if isinstance(buffer, torch.Tensor):
                    buffer.copy_(inputs[key])
            for key, buffer in entry.targets.items():
                buffer.copy_(targets[key])
            entry.graph.replay()
        for parameter, grad in entry.grads.items():
            parameter.grad = grad
        assert entry.loss is not None
        return entry.loss.detach().clone()

    def _forward_backward(self, inputs: dict[str, Any], targets: dict[str, torch.Tensor]):
        with self.context():
            output = self.model(inputs, compute_forces=True, training=True)
        loss = self.loss_fn(output, targets)
        loss.backward()
        return loss

    def _capture(
        self, bucket: Bucket, inputs: dict[str, Any], targets: dict[str, torch.Tensor]
    ) -> _Captured:
        entry = _Captured(
            {k: v.clone() if torch.is_tensor(v) else v for k, v in inputs.items()},
            {k: v.clone() for k, v in targets.items()},
        )
        saved = [p.grad for p in self.parameters]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                for p in self.parameters:
                    p.grad = None
                self._forward_backward(entry.inputs, entry.targets)
        torch.cuda.current_stream(self.device).wait_stream(side)
        for p in self.parameters:
            p.grad = None
        with torch.cuda.graph(entry.graph, pool=self.pool):
            entry.loss = self._forward_backward(entry.inputs, entry.targets)
        entry.grads = {p: p.grad for p in self.parameters if p.grad is not None}
        for p, grad in zip(self.parameters, saved, strict=True):
            p.grad = grad
        entry.graph.replay()
        self.captured[bucket] = entry
        return entry
