"""``MACE.set_edge_chunk``: messages summed chunk by chunk under activation checkpointing
give the same energies, forces and force-loss gradients (float64), and keep far fewer
bytes alive for the backward pass."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule

from .helpers import TINY_CONFIG, batch, default_dtype, silicon_cell, small_model


def _structures():
    with default_dtype(torch.float64):
        return batch([molecule("CH3CH2OH"), silicon_cell(seed=2)])


def _train_outputs(model, graphs) -> list[torch.Tensor]:
    """Energy, forces and the weight gradients of an energy + force loss (the double
    backward of force training)."""
    model.zero_grad()
    output = model(graphs, compute_forces=True, training=True)
    loss = output["energy"].pow(2).sum() + output["forces"].pow(2).sum()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return [output["energy"].detach(), output["forces"].detach(), *grads]


@pytest.mark.parametrize("parts", [3, 200], ids=["3_chunks", "chunks_below_one_atom"])
def test_chunked_messages_give_the_same_model(parts):
    """Chunks are ranges of receiving atoms; a chunk smaller than one atom's neighbours
    takes that atom whole."""
    model = small_model(seed=4, channels=4)
    graphs = _structures()
    num_edges = graphs.edge_index.shape[1]
    expected = _train_outputs(model, graphs)
    model.set_edge_chunk(num_edges // parts + 1)
    got = _train_outputs(model, graphs)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def _saved_bytes(model, graphs) -> int:
    """Bytes of the storages autograd keeps, inside the interactions, for the force
    backward of one forward pass."""
    storages: dict[int, int] = {}  # one entry per storage: views share their memory
    inside = [False]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if inside[0]:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def enter(*_):
        inside[0] = True

    def leave(*_):
        inside[0] = False

    handles = [m.register_forward_pre_hook(enter) for m in model.interactions]
    handles += [m.register_forward_hook(leave) for m in model.interactions]
    graphs = graphs.clone()
    graphs.positions.requires_grad_(True)  # what the force backward differentiates
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            energy = model(graphs, compute_forces=False)["energy"]
    finally:
        for handle in handles:
            handle.remove()
    assert energy.requires_grad  # the hooks saw the graph of the forces
    return sum(storages.values())


def test_chunks_keep_less_for_the_backward():
    model = small_model(seed=4, channels=16)
    graphs = _structures()
    num_edges = graphs.edge_index.shape[1]
    whole = _saved_bytes(model, graphs)
    model.set_edge_chunk(num_edges // 8)
    chunked = _saved_bytes(model, graphs)
    assert chunked < 0.7 * whole, (chunked, whole)  # 1.6x here; the tensor product is small


def test_edge_chunk_must_be_positive():
    with pytest.raises(ValueError, match="positive number of edges"):
        small_model().set_edge_chunk(0)


def test_edge_chunk_is_a_runtime_key_of_the_config():
    """model.edge_chunk (old name of runtime.edge_chunk) builds the same model (state dict
    keys) with chunked interactions; a checkpoint trained without it may resume with it (it
    does not change the function)."""
    from macelab.model import build_model
    from macelab.model.build import RUNTIME_KEYS
    from macelab.runtime import build_for_run

    plain = build_model(TINY_CONFIG)
    chunked = build_for_run({**TINY_CONFIG, "edge_chunk": 64})
    assert "edge_chunk" in RUNTIME_KEYS
    assert {m.edge_chunk for m in chunked.interactions} == {64}
    assert {m.edge_chunk for m in plain.interactions} == {None}
    assert plain.state_dict().keys() == chunked.state_dict().keys()


def test_calculator_takes_edge_chunk():
    from macelab.calculator import MACECalculator

    model = small_model(seed=1, channels=4, max_L=1, max_ell=2, correlation=2)
    atoms = silicon_cell(seed=3)
    plain = MACECalculator(model)
    chunked = MACECalculator(model, edge_chunk=50)
    atoms.calc = plain
    forces = atoms.get_forces()
    atoms.calc = chunked
    assert abs(atoms.get_forces() - forces).max() < 1e-10
    assert {m.edge_chunk for m in chunked.model.interactions} == {50}
