"""Where does the compiled, CUDA-graphed training step leave eager training? (GPU, float64)

On the H100 (2026-12-07, benchmarks/results/2026-12-07_h100_acac_repro_04e2691) the
compiled step's gradients equal eager's to 1e-15 at every one of 12 steps along an eager
AMSGrad trajectory, and a plain-SGD trajectory driven by the compiled step *without* CUDA
graphs stays within 1e-14 of eager; driven by the compiled step *with* CUDA graphs it is
0.5-1% of the update away from the second step on. That run was the second compilation in
its process (after the gradient test), as is stage two's program in a training run.

Each variant below runs in a fresh process (so in-process caches cannot mix variants) and
reports, per SGD step of a twin trained on the compiled step's gradients: the twin's
distance from the eager run, and the compiled gradients against eager gradients taken at
the *twin's own* weights (which says whether the program computes wrong gradients, or
right gradients that something else corrupts before the optimiser uses them).

    python benchmarks/gpu/compiled_step_probe.py --out $OUT/probe.json

Variants: graphs | inductor | graphs_second (after a throwaway compile in the same
process) | graphs_two_keys (a second program for new loss weights from step 6, as stage
two) | graphs_cloned (the optimiser gets clones of the graph's gradient buffers).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# PROBE_CPU=1 checks this script's logic on a CPU (aot_eager, no graphs)
DEVICE = "cpu" if os.environ.get("PROBE_CPU") else "cuda"
VARIANTS = ("graphs", "inductor", "graphs_second", "graphs_two_keys", "graphs_cloned")
STEPS = 12


def _setup(seed: int):
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from macelab.config import CONFIG_DIR, to_dict
    from macelab.precision import default_dtype
    from macelab.training.module import MACELightningModule
    from tests.training.conftest import TINY

    overrides = [o for o in TINY if not o.startswith(("trainer.accelerator", "data.num_train"))]
    overrides += ["data.num_train=55", "training.loss.forces_weight=1000"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule = instantiate(cfg.data, root=None)
    datamodule.prepare_data()
    datamodule.setup("fit")
    torch.manual_seed(seed)
    with default_dtype(torch.float64):
        module = MACELightningModule(
            model=to_dict(cfg.model),
            statistics=datamodule.statistics.to_dict(),
            loss=to_dict(cfg.training)["loss"],
            ema={"enabled": False},
        )
    batches = [b.to(DEVICE) for b in datamodule.train_dataloader()][:STEPS]
    return module.model.to(DEVICE).train(), module.loss_fn, batches


from tests.training.test_compiled_step_gpu import _eager_grads  # noqa: E402


def _largest(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _sgd(model, grads, lr: float = 1e-3) -> None:
    import torch

    with torch.no_grad():
        for p, g in zip([p for p in model.parameters() if p.requires_grad], grads, strict=True):
            p.add_(g, alpha=-lr)


def run_variant(variant: str) -> dict:

    from macelab.speed.compiled_train import CompiledTrainStep

    if variant == "graphs_second":  # a throwaway compilation first, as in the failing run
        model, loss_fn, batches = _setup(seed=1)
        CompiledTrainStep(model, loss_fn, cuda_graphs=DEVICE == "cuda")(batches[0])
    model, loss_fn, batches = _setup(seed=0)
    twin, probe = copy.deepcopy(model), copy.deepcopy(model)
    options = {"cuda_graphs": variant != "inductor"}
    if DEVICE == "cpu":
        options = {"cuda_graphs": False, "backend": "aot_eager"}
    step = CompiledTrainStep(twin, loss_fn, **options)
    twin_parameters = [p for p in twin.parameters() if p.requires_grad]
    record = {
        "variant": variant,
        "apart": [],
        "grad_error_at_twin_weights": [],
        "grad_scale": [],
        "weights_written_by_step": [],
    }
    for index, batch in enumerate(batches):
        key = None
        if variant == "graphs_two_keys" and index >= 6:  # both runs: new loss weights
            loss_fn.weights.energy, key = 10.0, "stage two"
        _sgd(model, _eager_grads(model, loss_fn, batch))
        before = [p.detach().clone() for p in twin_parameters]
        step(batch, key=key)
        # a step must not write into the weights (an input mutation would move the twin)
        record["weights_written_by_step"].append(
            _largest(before, [p.detach() for p in twin_parameters])
        )
        compiled = [p.grad.detach().clone() for p in twin_parameters]
        probe.load_state_dict(twin.state_dict())
        reference = _eager_grads(probe, loss_fn, batch)
        record["grad_error_at_twin_weights"].append(_largest(compiled, reference))
        record["grad_scale"].append(max(float(g.abs().max()) for g in reference))
        used = compiled if variant == "graphs_cloned" else [p.grad for p in twin_parameters]
        _sgd(twin, used)
        eager_w = [p.detach() for p in model.parameters() if p.requires_grad]
        twin_w = [p.detach() for p in twin_parameters]
        record["apart"].append(_largest(eager_w, twin_w))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one variant, in a child
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant)))
        return
    results = []
    for variant in args.variants:
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "--out", str(args.out), "--variant", variant],
            capture_output=True,
            text=True,
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        result = (
            json.loads(lines[-1]) if lines else {"variant": variant, "error": child.stderr[-3000:]}
        )
        result["seconds"] = time.perf_counter() - started
        results.append(result)
        print(variant, {k: v for k, v in result.items() if k in ("apart", "error")}, flush=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
