"""Padding to shape buckets leaves every real output unchanged (float64, CPU), and the
CUDA-graph potential reproduces the eager model (on a GPU; skipped without one)."""

from __future__ import annotations

import pytest
import torch

from macelab.speed.padding import bucket_for, graph_sizes, pad_graph, round_up, unpad
from tests.model.helpers import batch, graph, read_molecule, silicon_cell, small_model

KEYS = ("energy", "node_energy", "forces", "stress", "virials")


def _outputs(model, inputs, stress: bool) -> dict:
    out = model(inputs, compute_forces=True, compute_stress=stress)
    return {k: out[k].detach() for k in KEYS if out.get(k) is not None}


def _check_padded(model, inputs, stress: bool, growth: float = 1.25) -> None:
    sizes = graph_sizes(inputs)
    bucket = bucket_for(*sizes, growth=growth)
    assert bucket.atoms > sizes[0] and bucket.edges > sizes[1]
    padded = pad_graph(inputs, bucket, model.r_max, padding_number=1)
    expected = _outputs(model, inputs, stress)
    got = unpad(_outputs(model, padded, stress), sizes)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key
        torch.testing.assert_close(got[key], value, rtol=1e-12, atol=1e-12, msg=key)


def test_round_up_is_geometric_and_bounded():
    sizes = [round_up(n, 1.25, 8) for n in (1, 9, 100, 1000, 12345)]
    assert all(s % 8 == 0 for s in sizes)
    for n, s in zip((1, 9, 100, 1000, 12345), sizes, strict=True):
        assert n <= s <= max(8, 1.25 * n + 8)


def test_padding_edges_are_spread_over_padding_atoms():
    """No padding atom takes more than PADDING_DEGREE padding edges, every padding edge is
    a self-loop of a padding atom, and real edges keep their order."""
    from macelab.speed.padding import PADDING_DEGREE

    inputs = batch([silicon_cell(0), silicon_cell(1)])
    n_atoms, n_edges, n_graphs = graph_sizes(inputs)
    bucket = bucket_for(n_atoms, n_edges, n_graphs, growth=2.0)
    padded = pad_graph(inputs, bucket, 5.0, padding_number=1)
    sender, receiver = padded["edge_index"]
    torch.testing.assert_close(padded["edge_index"][:, :n_edges], inputs.edge_index)
    assert torch.equal(sender[n_edges:], receiver[n_edges:])
    assert bool((sender[n_edges:] >= n_atoms).all())
    degree = torch.bincount(sender[n_edges:] - n_atoms, minlength=bucket.atoms - n_atoms)
    assert bucket.edges - n_edges > PADDING_DEGREE  # the case that needs several atoms
    assert int(degree.max()) <= PADDING_DEGREE and int(degree.min()) >= 1


def test_padding_a_molecule_changes_nothing():
    model = small_model()
    _check_padded(model, graph(read_molecule("3bpa")), stress=False)


def test_padding_a_batch_changes_nothing():
    model = small_model()
    molecules = [read_molecule(name, 3) for name in ("acac", "ethanol", "3bpa")]
    _check_padded(model, batch(molecules), stress=False, growth=2.0)


def test_padding_a_periodic_cell_keeps_stress():
    model = small_model()
    _check_padded(model, batch([silicon_cell(0), silicon_cell(1)]), stress=True)


def test_padding_gives_finite_parameter_gradients():
    """Padding edges are longer than the cutoff: no NaN reaches the weights in training."""
    model = small_model()
    inputs = graph(read_molecule("acac"))
    bucket = bucket_for(*graph_sizes(inputs))
    out = model(pad_graph(inputs, bucket, model.r_max, 1), compute_forces=True, training=True)
    loss = out["energy"][:1].square().sum() + out["forces"].square().sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_potential_matches_eager():
    from macelab.speed.cuda_graphs import GraphedPotential

    model = small_model().cuda().eval()
    graphed = GraphedPotential(model)
    atoms = read_molecule("3bpa")
    for step in range(4):  # a short "trajectory": same bucket, replayed
        atoms.positions += 0.01 * step
        inputs = graph(atoms).to("cuda")
        expected = _outputs(model, inputs, stress=False)
        got = graphed(inputs)
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=1e-10, atol=1e-10, msg=key)
    assert graphed.num_graphs_captured == 1


def _labelled_batch():
    """Two molecules of two data sets, with their reference energies and forces."""
    molecules = [read_molecule(name, 5) for name in ("acac", "3bpa")]
    return batch(molecules)


def _loss():
    from macelab.training.loss import EnergyForcesLoss, LossWeights

    return EnergyForcesLoss(LossWeights(energy=1.0, forces=10.0))


def test_padded_loss_and_gradients_equal_unpadded():
    """The training loss on a padded batch (padding graph without labels) and its gradients
    with respect to every weight equal those of the batch itself."""
    from macelab.speed.padding import PaddedBatch, pad_labels

    model, loss_fn = small_model(), _loss()
    inputs = _labelled_batch()
    loss = loss_fn(model(inputs, compute_forces=True, training=True), inputs)["loss"]
    expected = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    bucket = bucket_for(*graph_sizes(inputs))
    padded = PaddedBatch(pad_graph(inputs, bucket, model.r_max, 1))
    padded.update(pad_labels(inputs, bucket))
    padded_loss = loss_fn(model(padded, compute_forces=True, training=True), padded)["loss"]
    got = torch.autograd.grad(padded_loss, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(padded_loss, loss, rtol=1e-12, atol=0.0)
    for g, e in zip(got, expected, strict=True):
        if e is None:
            assert g is None or not bool(g.abs().any())
        else:
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_train_step_matches_eager():
    from macelab.speed.train_step import GraphedTrainStep

    model, loss_fn = small_model().cuda().train(), _loss()
    inputs = _labelled_batch().to("cuda")
    loss = loss_fn(model(inputs, compute_forces=True, training=True), inputs)["loss"]
    expected = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    loss = loss.detach()  # no autograd graph may outlive its step into a capture
    step = GraphedTrainStep(model, loss_fn)
    for _ in range(3):  # replays give the same loss and gradients (weights unchanged)
        terms, output = step(inputs)
        torch.testing.assert_close(terms["loss"], loss, rtol=1e-10, atol=0.0)
        assert output["forces"].shape == inputs.forces.shape
        for p, e in zip(model.parameters(), expected, strict=True):
            if e is not None:
                torch.testing.assert_close(p.grad, e, rtol=1e-8, atol=1e-10)
    assert step.num_graphs_captured == 1


@pytest.mark.slow
def test_compiled_potential_traces_forces_and_stress_exactly():
    """make_fx records the whole call, force and stress backward included, as one program
    with every field an input: two structures of one bucket reuse it and match eager."""
    from macelab.speed.compiled import CompiledPotential

    model = small_model()
    potential = CompiledPotential(model, compute_stress=True, backend="aot_eager")
    for seed in (0, 1):
        inputs = batch([silicon_cell(seed)])
        expected = _outputs(model, inputs, stress=True)
        got = potential(inputs)
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=1e-10, atol=1e-10, msg=key)
    assert potential.num_programs == 1


def test_compiled_potential_refuses_unknown_elements():
    from macelab.model.embedding import UnknownElementError
    from macelab.speed.compiled import CompiledPotential

    model = small_model(atomic_numbers=[1, 6, 7, 8, 14][:4], atomic_energies=[0.0] * 4)
    with pytest.raises(UnknownElementError, match="Si"):
        CompiledPotential(model, backend="aot_eager")(batch([silicon_cell(0)]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_potential_on_gpu_matches_eager():
    """Inductor's fused kernels replayed from a CUDA graph, float64: rounding level."""
    from macelab.speed.compiled import CompiledPotential

    model = small_model().cuda().eval()
    potential = CompiledPotential(model)
    atoms = read_molecule("3bpa")
    for step in range(3):
        atoms.positions += 0.01 * step
        inputs = graph(atoms).to("cuda")
        expected = _outputs(model, inputs, stress=False)
        got = potential(inputs)
        for key in ("energy", "forces"):
            torch.testing.assert_close(got[key], expected[key], rtol=1e-9, atol=1e-9, msg=key)
    assert potential.num_programs == 1
