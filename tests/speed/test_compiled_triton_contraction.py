"""The compiled paths keep the Triton contraction (``model.backend=triton``): ``make_fx``
records its kernels, second derivatives included, as one custom operator
(``macelab::contraction``) per launch, and the traced training step and potential give the
eager e3nn model's numbers, float64 at rounding level (CPU: Triton's interpreter and
``aot_eager``; GPU: compiled kernels, Inductor and CUDA graphs)."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule

from macelab.kernels import set_backend
from tests.model.helpers import batch, graph, read_molecule, small_model
from tests.speed.test_compiled_fused_conv import SMALL, _small_labelled_batch, interpret_triton
from tests.speed.test_compiled_train import _check, _labelled_batch, _loss

__all__ = ["interpret_triton"]  # the fixture, used by name


@pytest.fixture
def kinds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool, bool]]:
    """``(kernel, with vA, with vT)`` of every launch of the contraction kernels."""
    from macelab.kernels import contraction_kernels

    seen: list[tuple[int, bool, bool]] = []
    ck = contraction_kernels
    for name, kind in (("rows", ck.ROWS), ("components", ck.COMPONENTS), ("terms", ck.TERMS)):
        function = getattr(contraction_kernels, name)

        def counted(*args, _kind=kind, _function=function, **kwargs):
            tangents = kwargs.get("d_features"), kwargs.get("d_tables")
            seen.append((_kind, *(t is not None for t in tangents)))
            return _function(*args, **kwargs)

        monkeypatch.setattr(contraction_kernels, name, counted)
    return seen


def _triton(model: torch.nn.Module) -> torch.nn.Module:
    return set_backend(model, "triton", convolution=False)


@pytest.mark.slow
def test_compiled_train_step_runs_the_triton_contraction(interpret_triton, kinds):
    """The traced step (forces and the loss's double backward) contracts in the Triton
    kernels, second derivatives included, and matches the eager e3nn model's loss, forces
    and every weight gradient."""
    from macelab.kernels import get_backend
    from macelab.speed.compiled_train import CompiledTrainStep

    model = small_model(channels=4, max_L=1, max_ell=2, correlation=2).train()
    inputs = _small_labelled_batch()
    step = CompiledTrainStep(_triton(model), _loss(), backend="aot_eager")
    assert {get_backend(m) for m in step.plain.modules() if hasattr(m, "contractions")} == {
        "triton"
    }
    kinds.clear()
    set_backend(model, "e3nn")  # the reference: e3nn's dense contraction
    _check(model, step, _loss(), inputs, rtol=1e-10, atol=1e-12)
    assert {kind for kind, *_ in kinds} == {0, 1, 2}
    assert any(va for kind, va, _ in kinds if kind == 1)  # a second derivative ran


def test_compiled_potential_runs_the_triton_contraction(interpret_triton, kinds):
    from macelab.speed.compiled import CompiledPotential

    model = small_model(channels=4, max_L=1, max_ell=2, correlation=2).eval()
    inputs = batch([molecule(name) for name in SMALL])
    expected = model(inputs, compute_forces=True)
    potential = CompiledPotential(_triton(model), backend="aot_eager")
    kinds.clear()
    got = potential(inputs)
    assert (0, False, False) in kinds and (1, False, False) in kinds
    for key in ("energy", "forces"):
        torch.testing.assert_close(got[key], expected[key].detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["train", "potential"])
def test_compiled_triton_contraction_on_gpu(kind):
    """Inductor around the custom operators (contraction and convolution), replayed from
    CUDA graphs: rounding level against the eager e3nn model."""
    pytest.importorskip("triton")
    from macelab.speed.compiled import CompiledPotential
    from macelab.speed.compiled_train import CompiledTrainStep

    model = small_model().cuda()
    if kind == "train":
        model.train()
        inputs = _labelled_batch().to("cuda")
        step = CompiledTrainStep(set_backend(model, "triton"), _loss())
        set_backend(model, "e3nn")
        for _ in range(2):
            _check(model, step, _loss(), inputs, rtol=1e-8, atol=1e-10)
        assert step.num_programs == 1
        return
    model.eval()
    inputs = graph(read_molecule("3bpa")).to("cuda")
    expected = model(inputs, compute_forces=True)
    potential = CompiledPotential(set_backend(model, "triton"))
    for _ in range(2):
        got = potential(inputs)
        for key in ("energy", "forces"):
            torch.testing.assert_close(got[key], expected[key].detach(), rtol=1e-9, atol=1e-9)
