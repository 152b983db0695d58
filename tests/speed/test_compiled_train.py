"""The compiled training step (make_fx through forces and the loss's double backward, one
program per bucket) gives the eager step's loss, predictions and weight gradients: float64
at rounding level on the CPU (trace checked without code generation), Inductor + CUDA
graphs on a GPU."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from macelab.data.graph import atoms_to_graph
from tests.model.helpers import read_molecule, small_model


def _labelled_batch(index: int = 5) -> Batch:
    """An AcAc and a 3BPA molecule with their reference energies and forces."""
    molecules = [read_molecule(name, index) for name in ("acac", "3bpa")]
    return Batch.from_data_list([atoms_to_graph(m, 5.0, read_labels=True) for m in molecules])


def _loss():
    from macelab.training.loss import EnergyForcesLoss, LossWeights

    return EnergyForcesLoss(LossWeights(energy=1.0, forces=10.0))


def _eager(model, loss_fn, inputs):
    output = model(inputs, compute_forces=True, training=True)
    loss = loss_fn(output, inputs)["loss"]
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return loss.detach(), output["forces"].detach(), grads


def _check(model, step, loss_fn, inputs, rtol: float, atol: float) -> None:
    loss, forces, expected = _eager(model, loss_fn, inputs)
    assert loss > 0  # real labels: the gradients below are not trivially zero
    terms, output = step(inputs)
    torch.testing.assert_close(terms["loss"], loss, rtol=rtol, atol=0.0)
    torch.testing.assert_close(output["forces"], forces, rtol=rtol, atol=atol)
    for (name, p), e in zip(model.named_parameters(), expected, strict=True):
        if e is None:
            assert not bool(p.grad.abs().any()), name
        else:
            torch.testing.assert_close(p.grad, e, rtol=rtol, atol=atol, msg=name)


@pytest.mark.slow
def test_compiled_train_step_matches_eager_and_follows_the_weights():
    """Same loss, forces and gradients as eager; after an optimiser step the same program
    (one bucket) sees the new weights: they are inputs of the program, not constants."""
    from macelab.speed.compiled_train import CompiledTrainStep

    model, loss_fn = small_model(channels=4, max_L=1, correlation=2).train(), _loss()
    inputs = _labelled_batch()
    step = CompiledTrainStep(model, loss_fn, backend="aot_eager")
    _check(model, step, loss_fn, inputs, rtol=1e-10, atol=1e-12)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    optimizer.step()  # uses the compiled step's gradients
    _check(model, step, loss_fn, _labelled_batch(index=7), 1e-10, 1e-12)
    assert step.num_programs == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_train_step_on_gpu_matches_eager():
    """Inductor's fused program replayed from a CUDA graph, float64: rounding level."""
    from macelab.speed.compiled_train import CompiledTrainStep

    model, loss_fn = small_model().cuda().train(), _loss()
    inputs = _labelled_batch().to("cuda")
    step = CompiledTrainStep(model, loss_fn)
    for _ in range(2):
        _check(model, step, loss_fn, inputs, rtol=1e-8, atol=1e-10)
    assert step.num_programs == 1


def test_compiled_train_step_refuses_precision_policies():
    """e3nn's torch.fx code (what make_fx traces) does not run under autocast: a policy or
    bf16-mixed is refused with a message, not traced into a wrong program."""
    from macelab.precision import load_precision, policy_of
    from macelab.precision.policy import apply_policy
    from macelab.speed.compiled_train import CompiledTrainStep

    model = small_model(channels=4, max_L=1, correlation=1)
    apply_policy(model, policy_of(load_precision("policy_safe")))
    with pytest.raises(ValueError, match=r"policy_safe.*precision=32 or 64"):
        CompiledTrainStep(model, _loss(), backend="aot_eager")


def test_compiled_train_step_refuses_autocast():
    """bf16-mixed (autocast) met when the first step is traced: a ValueError naming the
    precisions the compiled step takes (the CLI turns it into a one-paragraph error)."""
    from macelab.speed.compiled_train import CompiledTrainStep

    model = small_model(channels=4, max_L=1, correlation=2).train()
    step = CompiledTrainStep(model, _loss(), backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError) as error:
        step(_labelled_batch())
    assert "precision=32 or 64" in str(error.value)
