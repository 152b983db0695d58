"""Readouts: per-atom energies from the invariant features of each layer (Eq. 13).

    E_i = sum_t R^(t)(h_i^(t)),   R^(t) linear for every layer but the last, a one-hidden-
    layer MLP for the last.

Only the scalar (``0e``) channels reach the output: an e3nn ``o3.Linear`` to ``1x0e`` has no
path from ``L > 0`` irreps. As in mace-torch, a model with a single interaction reads out
linearly (its MLP readout belongs to the layers after the first).

Both readouts load INT8 weights (``macelab.model.quantized``): a state dict with int8 readout
buffers turns their linear maps to INT8 before loading, so a quantised checkpoint rebuilds
through the ordinary float model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3

from macelab.model.quantized import adopt_int8_state

GATES: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "silu": torch.nn.functional.silu,
    "tanh": torch.tanh,
    "abs": torch.abs,
    "none": None,
}


def gate_function(name: str | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The activation called ``name`` (``silu``, ``tanh``, ``abs``, ``none``)."""
    key = "none" if name is None else str(name).lower()
    if key not in GATES:
        raise ValueError(f"unknown gate {name!r}; choose one of {', '.join(GATES)}")
    return GATES[key]


def _adopt_int8_state(module: torch.nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """Load-state-dict pre-hook: INT8 readout weights in the state -> INT8 linear maps."""
    adopt_int8_state(module, state_dict, prefix)


class LinearReadout(torch.nn.Module):
    """``E_i^(t) = w . h_i^(t)[0e]``: ``[n, irreps_in.dim]`` -> ``[n]``."""

    def __init__(self, irreps_in: o3.Irreps) -> None:
        super().__init__()
        self.linear = o3.Linear(o3.Irreps(irreps_in), o3.Irreps("0e"))
        self.register_load_state_dict_pre_hook(_adopt_int8_state)

    def forward(self, node_feats: torch.Tensor) -> torch.Tensor:
        return self.linear(node_feats).squeeze(-1)


class NonLinearReadout(torch.nn.Module):
    """``E_i^(T) = W_2 sigma(W_1 h_i^(T)[0e])`` with ``hidden`` scalars in between.

    ``activation`` is e3nn's ``nn.Activation`` (the gate normalised to unit second moment),
    as in mace-torch's ``NonLinearReadoutBlock``.
    """

    def __init__(self, irreps_in: o3.Irreps, hidden: int = 16, gate: str | None = "silu") -> None:
        super().__init__()
        hidden_irreps = o3.Irreps([(hidden, (0, 1))])
        self.linear_1 = o3.Linear(o3.Irreps(irreps_in), hidden_irreps)
        self.activation = e3nn_nn.Activation(hidden_irreps, [gate_function(gate)])
        self.linear_2 = o3.Linear(hidden_irreps, o3.Irreps("0e"))
        self.register_load_state_dict_pre_hook(_adopt_int8_state)

    def forward(self, node_feats: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.activation(self.linear_1(node_feats))).squeeze(-1)
