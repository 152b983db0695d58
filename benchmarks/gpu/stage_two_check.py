"""Does the compiled training step's stage-two program give eager's gradients? (issue 27)

The AcAc runs of 2026-12-07 (float32, Triton backend, Inductor-compiled step) broke at the
first epoch of stage two on the H100 (validation energy RMSE 1.9 -> ~960 meV), not on a CPU.
Stage two is the step's second program: the same trace with other loss weights and the
per-atom energy term. This script follows an eager AMSGrad trajectory from the committed
AcAc model (models/acac-300K, trained weights: where stage two starts in a real run) through
``--steps`` stage-one steps and ``--steps`` stage-two steps, with an eager validation pass
between them as Lightning runs one, and at every step compares the compiled step's
gradients with eager's at the same weights.

Per step it records the relative difference (largest elementwise difference over the
largest eager gradient), the cosine of the two gradient vectors and their norm ratio, and
whether the step compiled a new program. On the GPU machine, from the repo root:

    python benchmarks/gpu/stage_two_check.py --backend triton --out $OUT/stage_two_triton.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from macelab.config import to_dict  # noqa: E402
from macelab.speed.compiled_train import CompiledTrainStep  # noqa: E402
from macelab.training.checkpoint import load_model  # noqa: E402
from macelab.training.loss import EnergyForcesLoss, LossWeights  # noqa: E402
from macelab.training.optim import OptimizerConfig, build_optimizer  # noqa: E402
from tests.training.conftest import compose_run_config  # noqa: E402
from tests.training.test_compiled_step_gpu import _eager_grads as eager_grads  # noqa: E402
from tests.training.test_compiled_step_gpu import _relative as relative  # noqa: E402
from tests.training.test_compiled_step_gpu import _step as step_as_lightning  # noqa: E402


def compare(compiled: list[torch.Tensor], eager: list[torch.Tensor]) -> dict[str, float]:
    a = torch.cat([g.flatten().double() for g in compiled])
    b = torch.cat([g.flatten().double() for g in eager])
    return {
        "relative": relative(compiled, eager),
        "cosine": float(torch.dot(a, b) / (a.norm() * b.norm())),
        "norm_ratio": float(a.norm() / b.norm()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="triton", choices=["e3nn", "triton"])
    parser.add_argument("--graphs", action="store_true", help="replay from CUDA graphs")
    parser.add_argument("--steps", type=int, default=8, help="steps per stage")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "acac-300K")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--compiler", default="inductor", help="aot_eager: check the script on a CPU"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)

    overrides = ["experiment=acac", "precision='32'", f"runtime.backend={args.backend}"]
    cfg = compose_run_config("train", overrides, Path(tempfile.mkdtemp()))
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    training = to_dict(cfg.training)
    model, _ = load_model(args.model, backend=args.backend, map_location=args.device)
    model = model.float().to(args.device).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    base = training["loss"]
    loss_fn = EnergyForcesLoss(
        LossWeights(base["energy_weight"], base["forces_weight"], 0.0),
        energy_per_atom=base["energy_per_atom"],
    )
    two = training["stage_two"]
    optimizer_config = {k: v for k, v in training["optimizer"].items() if k != "lr_scaling"}
    optimizer_config["lr"] = two["lr"]
    optimizer = build_optimizer(model, OptimizerConfig(**optimizer_config))
    step = CompiledTrainStep(model, loss_fn, cuda_graphs=args.graphs, backend=args.compiler)
    batches = iter(datamodule.train_dataloader())
    rows = []
    for stage in (1, 2):
        if stage == 2:  # what Lightning does between: validate eagerly, switch the loss
            model.eval()
            for batch in list(datamodule.val_dataloader())[:2]:
                model(batch.to(args.device), compute_forces=True)
            model.train()
            loss_fn.weights.energy = two["energy_weight"]
            loss_fn.weights.forces = two["forces_weight"]
            loss_fn.energy_per_atom = two["energy_per_atom"]
        key = (loss_fn.weights.energy, loss_fn.weights.forces, loss_fn.energy_per_atom)
        for _ in range(args.steps):
            batch = next(batches).to(args.device)
            eager = eager_grads(model, loss_fn, batch)
            programs, started = step.num_programs, time.perf_counter()
            terms, outputs = step(batch, key=key)
            grads = [p.grad.detach().clone() for p in parameters]
            energy_error = (outputs["energy"].detach() - batch.energy).double()
            row = {
                "stage": stage,
                "new_program": step.num_programs > programs,
                "seconds": round(time.perf_counter() - started, 2),
                "loss": float(terms["loss"]),
                "batch_energy_rmse_meV": float(energy_error.square().mean().sqrt()) * 1000,
                **compare(grads, eager),
            }
            rows.append(row)
            print(row, flush=True)
            step_as_lightning(model, optimizer, eager)  # follow eager's trajectory
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
        "torch": torch.__version__,
        "backend": args.backend,
        "graphs": args.graphs,
        "model": str(args.model.relative_to(ROOT)),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
