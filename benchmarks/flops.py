"""Arithmetic and memory-traffic count of one MACE forward pass, from the model's own shapes.

The count walks the float64 mace-torch reference (every path shares its hyperparameters and
weights) and sums, per forward pass on a batch of ``n_nodes`` atoms and ``n_edges`` edges:

* ``linear``: every ``o3.Linear`` (embedding, linear_up, the linear after the message, the
  product-basis linear, readouts), per node, ``2 * mul_in * mul_out * (2l+1)`` per irrep
  block; and the residual ``skip_tp`` (a ``FullyConnectedTensorProduct`` with the one-hot
  element), per node, counted as the tensor product below.
* ``tensor_product``: the channel-wise ``conv_tp`` per edge and per path ``(l1, l2) -> l3``:
  ``mul * (d1*d2 + 2*d1*d2*d3 + d3)`` for the outer product, the dense Clebsch-Gordan
  contraction and the per-edge weight (``d = 2l+1``). Dense, as e3nn evaluates it; a kernel
  that skips the CG zeros (cuEquivariance) does fewer operations.
* ``radial_mlp``: the radial MLP per edge, ``2 * h_in * h_out`` per layer.
* ``symmetric_contraction``: per node and output irrep, the einsum contractions of
  correlation ``nu = 1..correlation`` exactly as mace-torch writes them, costed by
  ``opt_einsum.contract_path`` (its optimal order) from the U tensors' shapes.
* ``aggregation``: the scatter-sum of messages onto receivers, one add per message value.

Spherical harmonics, the Bessel basis, activations and the energy sum are left out (small).

``values`` counts the tensor elements each operation reads and writes once (its inputs,
outputs and weights), i.e. the traffic of a module-by-module implementation with no fusion;
times the element size it gives the bytes for a memory floor.

Multipliers: energy plus forces (an inference call) is taken as 3 forward passes (the
backward pass through every operation costs about twice its forward); a training step, whose
forces are built with ``create_graph`` and then differentiated again, as 9 (3 for the forces
graph, twice that for its backward). Both are stated in every record.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import opt_einsum
import torch

MULTIPLIERS = {"forward": 1.0, "inference": 3.0, "training": 9.0}
MACE_ALPHABET = ["w", "x", "v", "n", "z", "r", "t", "y", "u", "o", "p", "s"]
OPERATIONS = ("linear", "tensor_product", "radial_mlp", "symmetric_contraction", "aggregation")


@dataclass
class Count:
    """FLOPs and values (tensor elements moved) of one forward pass, by operation."""

    flops: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OPERATIONS, 0.0))
    values: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OPERATIONS, 0.0))

    def add(self, operation: str, flops: float, values: float) -> None:
        self.flops[operation] += float(flops)
        self.values[operation] += float(values)

    @property
    def total_flops(self) -> float:
        return sum(self.flops.values())

    @property
    def total_values(self) -> float:
        return sum(self.values.values())


def _linear(module: torch.nn.Module) -> tuple[float, float, float]:
    """(flops per node, values per node, weight values) of an ``o3.Linear``."""
    flops = 0.0
    for ins in module.instructions:
        mul_in, mul_out = ins.path_shape
        flops += 2.0 * mul_in * mul_out * module.irreps_out[ins.i_out].ir.dim
    per_node = module.irreps_in.dim + module.irreps_out.dim
    return flops, per_node, float(module.weight_numel)


def _tensor_product(module: torch.nn.Module) -> tuple[float, float, float]:
    """(flops per item, values per item, shared weight values) of an e3nn TensorProduct."""
    flops = 0.0
    for ins in module.instructions:
        mul1 = module.irreps_in1[ins.i_in1].mul
        mul2 = module.irreps_in2[ins.i_in2].mul
        d1 = module.irreps_in1[ins.i_in1].ir.dim
        d2 = module.irreps_in2[ins.i_in2].ir.dim
        d3 = module.irreps_out[ins.i_out].ir.dim
        pairs = mul1 * mul2
        flops += pairs * (d1 * d2 + 2 * d1 * d2 * d3)
        if ins.connection_mode == "uvw":
            flops += 2.0 * pairs * module.irreps_out[ins.i_out].mul * d3
        else:
            flops += pairs * d3
    per_item = module.irreps_in1.dim + module.irreps_in2.dim + module.irreps_out.dim
    shared = float(module.weight_numel) if module.shared_weights else 0.0
    if not module.shared_weights:
        per_item += module.weight_numel
    return flops, per_item, shared


def _mlp(module: torch.nn.Module) -> tuple[float, float, float]:
    """(flops per edge, values per edge, weight values) of an ``e3nn.nn.FullyConnectedNet``."""
    hs = list(module.hs)
    flops = sum(2.0 * a * b for a, b in itertools.pairwise(hs))
    weights = sum(float(a * b) for a, b in itertools.pairwise(hs))
    return flops, float(sum(hs)), weights


def _contraction(module: torch.nn.Module, n_nodes: int) -> tuple[float, float]:
    """(flops, values) of one mace-torch ``Contraction`` (one output irrep) on n_nodes."""
    correlation = int(module.correlation)
    weights = [module.weights_max, *module.weights]  # nu = correlation, correlation-1, ...
    n_elements, _, channels = weights[0].shape
    flops = 0.0
    values = 0.0
    u_last = getattr(module, f"U_matrix_{correlation}")
    has_m = u_last.dim() == correlation + 2  # an extra leading (2L+1) axis when L > 0
    lm = 1 if has_m else 0
    d = u_last.shape[-2]
    m = u_last.shape[0] if has_m else 1
    for step, nu in enumerate(range(correlation, 0, -1)):
        u = getattr(module, f"U_matrix_{nu}")
        k = u.shape[-1]
        w_shape = (n_elements, k, channels)
        values += u.numel() + n_elements * k * channels
        if nu == correlation:
            letters = "".join(MACE_ALPHABET[: nu + lm - 1])
            eq = f"{letters}ik,ekc,bci,be->bc{letters}"
            shapes = [tuple(u.shape), w_shape, (n_nodes, channels, d), (n_nodes, n_elements)]
            flops += _einsum_cost(eq, shapes)
        else:
            letters = "".join(MACE_ALPHABET[: nu + lm])
            eq = f"{letters}k,ekc,be->bc{letters}"
            flops += _einsum_cost(eq, [tuple(u.shape), w_shape, (n_nodes, n_elements)])
            feature_letters = "".join(MACE_ALPHABET[: nu - 1 + lm])
            c_shape = (n_nodes, channels, *u.shape[:-1])
            eq = f"bc{feature_letters}i,bci->bc{feature_letters}"
            flops += _einsum_cost(eq, [c_shape, (n_nodes, channels, d)])
            flops += n_nodes * channels * u[..., 0].numel()  # c_tensor + out
        del step
    values += n_nodes * (channels * d + channels * m + n_elements)
    return flops, values


def _einsum_cost(equation: str, shapes: list[tuple[int, ...]]) -> float:
    """FLOPs of ``equation`` in opt_einsum's optimal contraction order."""
    _, info = opt_einsum.contract_path(equation, *shapes, shapes=True, optimize="optimal")
    return float(info.opt_cost)


def forward_count(model: torch.nn.Module, n_nodes: int, n_edges: int) -> Count:
    """Operation count of one forward pass of a mace-torch (e3nn) MACE on a batch."""
    from e3nn import nn as e3nn_nn
    from e3nn import o3

    count = Count()
    for name, module in model.named_modules():
        if isinstance(module, o3.Linear):
            flops, per_node, weights = _linear(module)
            count.add("linear", flops * n_nodes, per_node * n_nodes + weights)
        elif isinstance(module, o3.TensorProduct):
            flops, per_item, weights = _tensor_product(module)
            if name.endswith("conv_tp"):
                count.add("tensor_product", flops * n_edges, per_item * n_edges + weights)
                out_dim = module.irreps_out.dim
                count.add("aggregation", out_dim * n_edges, out_dim * (n_edges + n_nodes))
            else:
                count.add("linear", flops * n_nodes, per_item * n_nodes + weights)
        elif isinstance(module, e3nn_nn.FullyConnectedNet):
            flops, per_edge, weights = _mlp(module)
            count.add("radial_mlp", flops * n_edges, per_edge * n_edges + weights)
        elif hasattr(module, "U_matrix_1") and hasattr(module, "weights_max"):
            flops, values = _contraction(module, n_nodes)
            count.add("symmetric_contraction", flops, values)
    return count


def summary(count: Count, kind: str, bytes_per_value: int) -> dict[str, object]:
    """The record's ``flops`` field: per-call totals for ``kind`` and the breakdown."""
    multiplier = MULTIPLIERS[kind]
    return {
        "forward": count.total_flops,
        "kind": kind,
        "multiplier": multiplier,
        "per_call": count.total_flops * multiplier,
        "bytes_per_call": count.total_values * bytes_per_value * multiplier,
        "bytes_per_value": bytes_per_value,
        "forward_by_operation": dict(count.flops),
        "assumption": (
            "dense e3nn/mace-torch formulation (opt_einsum order for the symmetric "
            "contraction); inference = 3x forward, training step = 9x forward; bytes: each "
            "operation reads its inputs and writes its outputs once (no fusion)"
        ),
    }
