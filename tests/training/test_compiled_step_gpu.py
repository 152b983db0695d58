"""The compiled training step trains the same model as eager training (GPU only, float64).

``training.compile_step=true`` traces a whole step into one program that Inductor compiles
and a CUDA graph replays. Inductor reorders and fuses floating-point sums, so its gradients
equal eager's to rounding, not bit for bit. These tests separate the two questions that a
difference after some training steps raises:

1. At the same weights, does the compiled step give eager's gradients? Checked at every one
   of 12 steps along an eager AMSGrad trajectory (so at weights real training visits, with
   the two shape buckets of a full and a short last batch sharing one graph pool).
2. Does a trajectory built from the compiled gradients stay on eager's? With plain SGD the
   update is linear in the gradient, so rounding differences stay at rounding level; with
   Adam/AMSGrad, ``m / sqrt(v)`` divides by the gradient's own size, so components whose
   gradient is tiny take full-size steps in a direction set by rounding. The AMSGrad
   divergence is measured and reported beside the SGD one, not asserted small.

Set ``MACELAB_GPU_RECORD=<folder>`` to write the per-step numbers as JSON there.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from macelab.config import to_dict
from macelab.precision import default_dtype
from macelab.speed.compiled_train import CompiledTrainStep
from macelab.training.module import MACELightningModule
from macelab.training.optim import OptimizerConfig, build_optimizer
from tests.training.conftest import TINY
from tests.training.stage_two_runs import assert_same_test_metrics, train_eager_and_compiled

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

STEPS = 12
# 57 training configurations in batches of 5: 11 full batches and a short one (two buckets).
OVERRIDES = [o for o in TINY if not o.startswith(("trainer.accelerator", "data.num_train"))]
OVERRIDES += ["data.num_train=57", "training.loss.forces_weight=1000"]


def _record(name: str, payload: dict) -> None:
    folder = os.environ.get("MACELAB_GPU_RECORD")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")


def _setup(compose_config, backend: str = "e3nn"):
    """The TINY run's model (float64, on the GPU), loss, optimiser config and 12 batches,
    with the symmetric contraction of ``backend`` (triton: also the fused convolution)."""
    cfg = compose_config("train", [*OVERRIDES, f"runtime.backend={backend}"])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    training = to_dict(cfg.training)
    with default_dtype(torch.float64):
        module = MACELightningModule(
            model=to_dict(cfg.model),
            statistics=datamodule.statistics.to_dict(),
            loss=training["loss"],
            ema={"enabled": False},
        )
    model = module.model.cuda().train()
    batches = [b.to("cuda") for b in datamodule.train_dataloader()][:STEPS]
    assert len(batches) == STEPS and batches[-1].num_graphs < batches[0].num_graphs
    optimizer = {k: v for k, v in training["optimizer"].items() if k != "lr_scaling"}
    return model, module.loss_fn, OptimizerConfig(**optimizer), batches


def _eager_grads(model, loss_fn, batch) -> list[torch.Tensor]:
    output = model(batch, compute_forces=True, training=True)
    loss = loss_fn(output, batch)["loss"]
    parameters = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    return [
        torch.zeros_like(p) if g is None else g.detach()
        for g, p in zip(grads, parameters, strict=True)
    ]


def _relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Largest elementwise difference over the largest magnitude, across all tensors."""
    scale = max(float(t.abs().max()) for t in b)
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True)) / scale


def _largest(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The largest elementwise difference between two lists of tensors."""
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


def _step(model, optimizer, grads: list[torch.Tensor]) -> None:
    """One optimiser step as Lightning takes it: gradient clipping at norm 10 first."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    for p, g in zip(parameters, grads, strict=True):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(parameters, 10.0)
    optimizer.step()


@pytest.mark.parametrize("backend", ["e3nn", "triton"])
def test_compiled_gradients_equal_eager_at_every_step(compose_config, backend):
    """At the weights of each of 12 eager AMSGrad steps, the compiled step's gradients
    equal eager's to rounding (1e-10 of the largest gradient)."""
    model, loss_fn, optimizer_config, batches = _setup(compose_config, backend)
    compiled = CompiledTrainStep(model, loss_fn, cuda_graphs=True)
    optimizer = build_optimizer(model, optimizer_config)
    parameters = [p for p in model.parameters() if p.requires_grad]
    errors, zero_in_eager_only = [], []
    for batch in batches:
        eager = _eager_grads(model, loss_fn, batch)
        compiled(batch)
        grads = [p.grad.detach().clone() for p in parameters]
        errors.append(_relative(grads, eager))
        zero_in_eager_only.append(
            sum(int(((e == 0) & (g != 0)).sum()) for e, g in zip(eager, grads, strict=True))
        )
        _step(model, optimizer, eager)  # follow the eager trajectory
    _record(
        f"compiled_gradients_per_step_{backend}",
        {"relative": errors, "zero_in_eager_only": zero_in_eager_only},
    )
    assert compiled.num_programs == 2  # the full and the short batch
    assert max(errors) < 1e-10, errors


@pytest.mark.parametrize("backend", ["e3nn", "triton"])
@pytest.mark.parametrize("graphs", [False, True], ids=["inductor", "graphs"])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_compiled_trajectory_against_eager(compose_config, name, graphs, backend):
    """Twelve steps from the same weights, one run on eager gradients, one on the compiled
    step's: with SGD the weights agree to 1e-10 relative; with AMSGrad the divergence is
    recorded (rounding differences are amplified where gradients are tiny)."""
    model, loss_fn, optimizer_config, batches = _setup(compose_config, backend)
    optimizer_config.name = name
    if name == "sgd":
        optimizer_config.lr = 1e-3
    twin = copy.deepcopy(model)
    compiled = CompiledTrainStep(twin, loss_fn, cuda_graphs=graphs)
    optimizers = build_optimizer(model, optimizer_config), build_optimizer(twin, optimizer_config)
    start = _weights(model)
    moved, apart = [], []
    twin_parameters = [p for p in twin.parameters() if p.requires_grad]
    for batch in batches:
        _step(model, optimizers[0], _eager_grads(model, loss_fn, batch))
        compiled(batch)
        _step(twin, optimizers[1], [p.grad.detach() for p in twin_parameters])
        eager_weights, compiled_weights = _weights(model), _weights(twin)
        moved.append(_relative(eager_weights, start))
        # how far the two runs are apart, over how far eager has moved from the start
        apart.append(_largest(compiled_weights, eager_weights) / _largest(eager_weights, start))
    _record(
        f"compiled_trajectory_{name}_{'graphs' if graphs else 'inductor'}_{backend}",
        {"weights_moved": moved, "difference_over_update": apart},
    )
    assert moved[-1] > 1e-6  # the weights really moved
    if name == "sgd":
        assert max(apart) < 1e-10, apart
    else:
        assert all(torch.isfinite(torch.tensor(apart))), apart


@pytest.mark.parametrize("backend", ["e3nn", "triton"])
@pytest.mark.parametrize("graphs", [False, True], ids=["inductor", "graphs"])
def test_compiled_training_matches_eager_with_sgd(compose_config, tmp_path, graphs, backend):
    """The whole training run (Lightning loop, stage two's second program, validation,
    test) with runtime.compile=true, with and without CUDA graphs, gives the eager run's
    test metrics with plain SGD, where the trajectory does not amplify rounding. The AcAc
    runs of 2026-12-07 broke at stage two on the GPU (not on a CPU): this is its gate."""
    gpu = ["trainer.accelerator=gpu", "trainer.devices=1", f"runtime.backend={backend}"]
    flags = ["runtime.compile=true", f"runtime.cuda_graphs={str(graphs).lower()}"]
    results = train_eager_and_compiled(compose_config, tmp_path, gpu, flags)
    _record(
        f"compiled_training_sgd_metrics_{'graphs' if graphs else 'inductor'}_{backend}",
        {str(k): v for k, v in results.items()},
    )
    assert_same_test_metrics(results)
