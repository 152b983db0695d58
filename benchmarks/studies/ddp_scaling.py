"""DDP scaling of training: throughput, time per epoch and peak memory for N = 1, 2, 4 GPUs.

For each workload (the paper's model on AcAc at 5 configurations per GPU, and on 3BPA at 32
per GPU) and each device count, one `python -m macelab.train` run trains a fixed number of
epochs; from its metrics it reports the training time per epoch (``time/train_epoch_s``,
validation excluded), throughput in configurations/s, scaling efficiency against N = 1, the
peak GPU memory of every rank, and the validation errors at the end.

Two kinds of run:

* ``--mode throughput`` (default): the per-GPU batch is fixed, so the global batch is
  per-GPU batch x N and an N-GPU epoch has 1/N as many optimiser steps. For N = 1 it runs
  both the plain single-device trainer (``trainer=gpu``) and ``trainer=ddp
  trainer.devices=1``: the same code path as N > 1, whose throughput must be within a few
  percent of the plain one (no hidden synchronisation cost).
* ``--mode equal-steps``: the *global* batch is fixed (``--global-batch``, split over the N
  GPUs), so every N takes the same optimiser steps on the same data per epoch and the
  validation errors after each epoch must agree with N = 1 (up to the order of floating
  point sums and the different per-rank sampling order).

    python benchmarks/studies/ddp_scaling.py --devices 1 2 --out DIR            # GPUs
    python benchmarks/studies/ddp_scaling.py --mode equal-steps --global-batch 10 \\
        --devices 1 2 --out DIR
    python benchmarks/studies/ddp_scaling.py --tiny --devices 1 2 --out DIR  # CPU (gloo)

NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and friends are set for every run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

WORKLOADS = {
    "acac_b5": ["experiment=acac", "data.batch_size=5"],
    "3bpa_b32": ["experiment=3bpa", "data.batch_size=32"],
}
NO_MULTICAST = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def run_one(out: Path, workload: str, devices: int, strategy: str, args) -> dict:
    """One training run; ``strategy`` is ``plain`` (single-device trainer) or ``ddp``."""
    steps = "_equal_steps" if args.mode == "equal-steps" else ""
    name = f"{workload}_{strategy}{devices}{steps}"
    if (out / name).exists():  # a repeat of this point
        name += f"_r{len(list(out.glob(name + '*.log'))) + 1}"
    run_dir = out / name
    overrides = [
        *WORKLOADS[workload],
        f"trainer={'ddp' if strategy == 'ddp' else ('cpu' if args.tiny else 'gpu')}",
        f"hydra.run.dir={run_dir}",
        f"trainer.devices={devices}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        "trainer.limit_test_batches=0",
        "callbacks.last_checkpoint=null",
        "callbacks.best_checkpoint=null",
        "+callbacks.peak_memory._target_=benchmarks.studies.ddp_callbacks.PeakMemory",
        f"+callbacks.peak_memory.path={run_dir}",
    ]
    if args.mode == "equal-steps":
        if args.global_batch % devices:
            raise SystemExit(f"--global-batch {args.global_batch} is not divisible by {devices}")
        overrides.append(f"data.batch_size={args.global_batch // devices}")
        overrides.append("training.optimizer.lr_scaling=none")
    if args.tiny:
        overrides += [
            "trainer.accelerator=cpu",
            "model/size=tiny",
            "model.correlation=2",
            "precision='32'",
            "data.num_train=40",
            "data.num_valid=10",
        ]
        if args.mode != "equal-steps":
            overrides.append("data.batch_size=4")
    else:
        overrides.append("trainer.accelerator=gpu")
    env = {
        **os.environ,
        **NO_MULTICAST,
        "PYTHONPATH": f"{Path.cwd()}:{os.environ.get('PYTHONPATH', '')}",
    }
    started = time.perf_counter()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "macelab.train", *overrides],
            capture_output=True,
            text=True,
            env=env,
            timeout=args.timeout,
        )
    except subprocess.TimeoutExpired:
        return {"workload": workload, "devices": devices, "strategy": strategy,
                "mode": args.mode, "failed": f"timed out after {args.timeout} s"}  # fmt: skip
    wall = time.perf_counter() - started
    (out / f"{name}.log").write_text(result.stdout + result.stderr)
    base = {"workload": workload, "devices": devices, "strategy": strategy, "mode": args.mode}
    if result.returncode != 0:
        return {**base, "failed": result.stderr[-2000:]}
    metrics = pd.read_csv(run_dir / "metrics.csv")
    epochs = metrics.dropna(subset=["time/train_epoch_s"])
    epoch_s = epochs["time/train_epoch_s"].to_numpy()
    info = json.loads((run_dir / "run_info.json").read_text())
    val = metrics.dropna(subset=["val/forces_rmse_meV_per_A"]).iloc[-1]
    memory = [json.loads(p.read_text()) for p in sorted(run_dir.glob("peak_memory_rank*.json"))]
    steps_per_epoch = info["global_step"] / max(info["epochs"], 1)
    configs_per_epoch = float(epochs["time/train_configurations"].iloc[-1])
    steady = epoch_s[1:] if len(epoch_s) > 1 else epoch_s  # the first epoch warms up
    validations = metrics.dropna(subset=["val/forces_rmse_meV_per_A"])
    return {
        **base,
        "wall_s": wall,
        "epochs": int(info["epochs"]),
        "optimizer_steps": int(info["global_step"]),
        "steps_per_epoch": steps_per_epoch,
        "train_epoch_s_median": float(pd.Series(steady).median()),
        "configurations_per_epoch": configs_per_epoch,
        "throughput_configs_per_s": configs_per_epoch / float(pd.Series(steady).median()),
        "peak_memory_MiB_per_rank": [m["peak_MiB"] for m in memory],
        "val_forces_rmse_meV_per_A": float(val["val/forces_rmse_meV_per_A"]),
        "val_energy_rmse_meV": float(val["val/energy_rmse_meV"]),
        "val_history": [
            {
                "epoch": int(row["epoch"]),
                "step": int(row["step"]),
                "forces_rmse_meV_per_A": float(row["val/forces_rmse_meV_per_A"]),
                "energy_rmse_meV": float(row["val/energy_rmse_meV"]),
            }
            for _, row in validations.iterrows()
        ],
    }


def table(records: list[dict]) -> str:
    header = (
        "workload", "trainer", "GPUs", "epochs", "steps", "s / epoch (train)", "configs/s",
        "scaling eff.", "peak MiB per GPU", "val F RMSE (meV/Å)", "val E RMSE (meV)",
    )  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base: dict[str, dict] = {}
    for r in records:  # the reference is the first N = 1 run of each workload (plain if run)
        if r["devices"] == 1 and "failed" not in r:
            base.setdefault(r["workload"], r)
    for r in records:
        if "failed" in r:
            lines.append(
                f"| {r['workload']} | {r['strategy']} | {r['devices']} | "
                f"FAILED: {r['failed'][-200:]!r} |"
            )
            continue
        ref = base.get(r["workload"])
        efficiency = (
            r["throughput_configs_per_s"] / (r["devices"] * ref["throughput_configs_per_s"])
            if ref
            else float("nan")
        )
        memory = ", ".join("—" if m is None else f"{m:.0f}" for m in r["peak_memory_MiB_per_rank"])
        lines.append(
            f"| {r['workload']} | {r['strategy']} | {r['devices']} | {r['epochs']} | "
            f"{r['optimizer_steps']} | "
            f"{r['train_epoch_s_median']:.2f} | {r['throughput_configs_per_s']:.1f} | "
            f"{efficiency:.2f} | {memory} | {r['val_forces_rmse_meV_per_A']:.1f} | "
            f"{r['val_energy_rmse_meV']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def history_table(records: list[dict]) -> str:
    """Validation force RMSE after each epoch, one column per run (equal-steps mode)."""
    done = [r for r in records if "failed" not in r]
    names = [f"{r['workload']} N={r['devices']}" for r in done]
    lines = ["| epoch | step | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
    for i, entry in enumerate(done[0]["val_history"] if done else []):
        cells = [
            f"{r['val_history'][i]['forces_rmse_meV_per_A']:.2f}"
            if i < len(r["val_history"])
            else "—"
            for r in done
        ]
        lines.append(f"| {entry['epoch']} | {entry['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--mode", choices=["throughput", "equal-steps"], default="throughput")
    parser.add_argument("--global-batch", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="run every point this often")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument(
        "--no-plain", action="store_true", help="skip the plain single-device reference run"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for workload in args.workloads:
        points = [(n, "ddp") for n in args.devices]
        if 1 in args.devices and args.mode == "throughput" and not args.no_plain:
            points.insert(0, (1, "plain"))
        for devices, strategy in points * args.repeat:
            print(f"{workload}: {strategy} on {devices} device(s) ...", flush=True)
            records.append(run_one(args.out, workload, devices, strategy, args))
            (args.out / f"ddp_scaling_{args.mode}.json").write_text(json.dumps(records, indent=2))
    text = table(records)
    if args.mode == "equal-steps":
        text += "\n" + history_table(records)
    (args.out / f"ddp_scaling_{args.mode}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
