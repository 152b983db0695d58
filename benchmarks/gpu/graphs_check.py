"""Where does the CUDA-graphed compiled training step leave eager? (issue 27, item 1)

The 2026-12-07 GPU run found that the compiled step replayed from a CUDA graph gives eager's
gradients at eager's weights at every step (test_compiled_gradients_equal_eager_at_every_step)
while an SGD twin trained on its gradients leaves eager by 0.5-1% of the update from step 2
on; without graphs the twin stays within 1e-14. This script separates the candidates, on the
tests' tiny float64 model and 12 batches (two shape buckets):

* ``same_model``: one model, a graphed and an Inductor-only step on it; after each step the
  weights move (SGD on the Inductor gradients). Does a replay read the live weights?
* ``twin``: the trajectory test's layout (an eager model and a deep-copied twin, each with
  its own optimiser), comparing at each step the graphed gradients at the twin's weights with
  eager and Inductor-only gradients at the same (twin's) weights.

Writes JSON with the per-step relative differences. On the GPU machine, from the repo root:
    python benchmarks/gpu/graphs_check.py --out $OUT/graphs_check.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from macelab.speed.compiled_train import CompiledTrainStep
from tests.training.conftest import compose_run_config
from tests.training.test_compiled_step_gpu import _eager_grads as eager_grads
from tests.training.test_compiled_step_gpu import _relative as rel
from tests.training.test_compiled_step_gpu import _setup as gpu_setup


def setup():
    """The GPU tests' tiny float64 model, loss and 12 batches (test_compiled_step_gpu)."""
    folder = Path(tempfile.mkdtemp())

    def compose(name: str, overrides: list[str]):
        return compose_run_config(name, overrides, folder)

    model, loss_fn, _, batches = gpu_setup(compose)
    return model, loss_fn, batches


def params(model):
    return [p for p in model.parameters() if p.requires_grad]


def grads_of(step, model, batch):
    step(batch)
    return [p.grad.detach().clone() for p in params(model)]


def sgd(model, grads, lr=1e-3):
    with torch.no_grad():
        for p, g in zip(params(model), grads, strict=False):
            p.sub_(lr * g)


def same_model(model, loss_fn, batches):
    graphed = CompiledTrainStep(model, loss_fn, cuda_graphs=True)
    plain = CompiledTrainStep(model, loss_fn, cuda_graphs=False)
    rows = []
    for i, batch in enumerate(batches):
        n_before = graphed.num_programs
        g = grads_of(graphed, model, batch)
        p = grads_of(plain, model, batch)
        e = eager_grads(model, loss_fn, batch)
        rows.append(
            {
                "step": i,
                "new_program": graphed.num_programs > n_before,
                "graphed_vs_inductor": rel(g, p),
                "graphed_vs_eager": rel(g, e),
                "inductor_vs_eager": rel(p, e),
            }
        )
        print("same_model", rows[-1], flush=True)
        sgd(model, p)
    return rows


def twin_layout(model, loss_fn, batches):
    twin = copy.deepcopy(model)
    graphed = CompiledTrainStep(twin, loss_fn, cuda_graphs=True)
    plain = CompiledTrainStep(twin, loss_fn, cuda_graphs=False)
    rows = []
    for i, batch in enumerate(batches):
        sgd(model, eager_grads(model, loss_fn, batch))  # the eager run, as in the test
        g = grads_of(graphed, twin, batch)
        p = grads_of(plain, twin, batch)
        e = eager_grads(twin, loss_fn, batch)
        rows.append(
            {
                "step": i,
                "graphed_vs_inductor": rel(g, p),
                "graphed_vs_eager_at_twin": rel(g, e),
                "twin_vs_model_weights": rel(params(twin), params(model)),
            }
        )
        print("twin", rows[-1], flush=True)
        sgd(twin, g)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, loss_fn, batches = setup()
    start = copy.deepcopy(model)
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "same_model": same_model(model, loss_fn, batches),
        "twin": twin_layout(start, loss_fn, batches),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
