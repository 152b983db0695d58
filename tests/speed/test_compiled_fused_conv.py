"""The compiled paths keep the fused convolution: ``make_fx`` records its kernels as one
custom operator (``macelab::conv_partials``), and the traced training step and potential
give the eager model's numbers, float64 at rounding level (CPU: Triton's interpreter and
``aot_eager``; GPU: compiled kernels, Inductor and CUDA graphs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from macelab.kernels import set_backend
from tests.model.helpers import batch, graph, read_molecule, small_model
from tests.speed.test_compiled_train import _check, _labelled_batch, _loss

# Two molecules of different sizes (3 and 5 atoms: neighbour counts 2 and 4, so the kernels'
# masked loops over neighbours are exercised): Triton's interpreter runs every kernel
# instance in Python, at a cost of atoms x the largest neighbour count. Ethanol in place of
# water (9 atoms, 8 neighbours each) made these tests 3-4x slower and checked nothing more.
SMALL = ("H2O", "HCOOH")


def _small_labelled_batch():
    """Water and formic acid with arbitrary labels (a nonzero loss whose gradients reach
    every weight): small enough for Triton's interpreter."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from torch_geometric.data import Batch

    from macelab.data.graph import atoms_to_graph

    rng = np.random.default_rng(0)
    structures = [molecule(name) for name in SMALL]
    for atoms in structures:
        forces = rng.normal(size=(len(atoms), 3))
        atoms.calc = SinglePointCalculator(atoms, energy=-3.0 * len(atoms), forces=forces)
    return Batch.from_data_list([atoms_to_graph(a, 5.0, read_labels=True) for a in structures])


@pytest.fixture
def interpret_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """The models of these tests live on the CPU: Triton's interpreter runs the kernels."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The ``wanted`` slots of every launch of the fused kernels (counted, then run)."""
    from macelab.kernels import triton_conv

    seen: list[tuple[int, ...]] = []
    launch = triton_conv._launch

    def counted(plan, graph, wanted, args):
        seen.append(wanted)
        return launch(plan, graph, wanted, args)

    monkeypatch.setattr(triton_conv, "_launch", counted)
    return seen


def _fused(model: torch.nn.Module) -> torch.nn.Module:
    return set_backend(model, "e3nn", convolution=True)


@pytest.mark.slow
def test_compiled_train_step_runs_the_fused_kernels(interpret_triton, launches):
    """The traced step (forces and the loss's double backward) runs the fused kernels, not
    e3nn's tensor product, and matches the eager e3nn model's loss, forces and gradients."""
    from macelab.speed.compiled_train import CompiledTrainStep

    model = small_model(channels=4, max_L=1, max_ell=2, correlation=2).train()
    inputs = _small_labelled_batch()
    step = CompiledTrainStep(_fused(model), _loss(), backend="aot_eager")
    plain = step.plain
    assert {m.conv_backend for m in plain.interactions} == {"triton"}
    launches.clear()
    set_backend(model, "e3nn", convolution=False)  # the reference: e3nn's convolution
    _check(model, step, _loss(), inputs, rtol=1e-10, atol=1e-12)
    # the forward's sums (dPhi/dG), the forces' partials (dPhi/dY, dPhi/dh, dPhi/dR) and
    # the double backward's (dPhi/dG among others) all ran in the fused kernels
    assert (3,) in launches and (0, 1, 2) in launches
    assert any(3 in wanted and len(wanted) > 1 for wanted in launches)


def test_compiled_potential_runs_the_fused_kernels(interpret_triton, launches):
    from macelab.speed.compiled import CompiledPotential

    model = small_model(channels=4, max_L=1, max_ell=2, correlation=2).eval()
    inputs = batch([molecule(name) for name in SMALL])
    expected = model(inputs, compute_forces=True)
    potential = CompiledPotential(_fused(model), backend="aot_eager")
    launches.clear()
    got = potential(inputs)
    assert (3,) in launches  # the neighbour sums ran in the fused kernels
    for key in ("energy", "forces"):
        torch.testing.assert_close(got[key], expected[key].detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["train", "potential"])
def test_compiled_fused_convolution_on_gpu(kind):
    """Inductor around the custom operator, replayed from CUDA graphs: rounding level."""
    pytest.importorskip("triton")
    from macelab.speed.compiled import CompiledPotential
    from macelab.speed.compiled_train import CompiledTrainStep

    model = small_model().cuda()
    if kind == "train":
        model.train()
        inputs = _labelled_batch().to("cuda")
        step = CompiledTrainStep(_fused(model), _loss())
        set_backend(model, "e3nn", convolution=False)
        for _ in range(2):
            _check(model, step, _loss(), inputs, rtol=1e-8, atol=1e-10)
        assert step.num_programs == 1
        return
    model.eval()
    inputs = graph(read_molecule("3bpa")).to("cuda")
    expected = model(inputs, compute_forces=True)
    potential = CompiledPotential(_fused(model))
    for _ in range(2):
        got = potential(inputs)
        for key in ("energy", "forces"):
            torch.testing.assert_close(got[key], expected[key].detach(), rtol=1e-9, atol=1e-9)
