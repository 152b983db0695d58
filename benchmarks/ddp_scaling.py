"""DDP scaling of training: throughput, time per epoch and peak memory for N = 1, 2, 4 GPUs.

For each workload (the paper's model on AcAc at 5 configurations per GPU, and on 3BPA at 32
per GPU) and each device count, one `python -m macelab.train` run with Lightning DDP trains a
fixed number of epochs; from its metrics it reports the training time per epoch
(``time/train_epoch_s``, validation excluded), throughput in configurations/s, scaling
efficiency against N = 1, the peak GPU memory of every rank, and the validation errors at
the end. The global batch is per-GPU batch x N, so after the same number of epochs the N-GPU
run has taken 1/N as many optimiser steps; the validation errors are reported side by side,
not expected to be equal.

    python benchmarks/ddp_scaling.py --devices 1 2 --out DIR            # GPUs
    python benchmarks/ddp_scaling.py --tiny --devices 1 2 --out DIR     # CPU processes (gloo)

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


def run_one(out: Path, workload: str, devices: int, args) -> dict:
    run_dir = out / f"{workload}_n{devices}"
    overrides = [
        *WORKLOADS[workload],
        f"hydra.run.dir={run_dir}",
        f"trainer.devices={devices}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        "trainer.limit_test_batches=0",
        "callbacks.last_checkpoint=null",
        "callbacks.best_checkpoint=null",
        "+callbacks.peak_memory._target_=benchmarks.ddp_callbacks.PeakMemory",
        f"+callbacks.peak_memory.path={run_dir}",
    ]
    if devices > 1:
        overrides.append("trainer.strategy=ddp")
    if args.tiny:
        overrides += [
            "trainer.accelerator=cpu",
            "model/size=tiny",
            "model.correlation=2",
            "precision='32'",
            "data.num_train=40",
            "data.num_valid=10",
            "data.batch_size=4",
        ]
    else:
        overrides.append("trainer.accelerator=gpu")
    env = {
        **os.environ,
        **NO_MULTICAST,
        "PYTHONPATH": f"{Path.cwd()}:{os.environ.get('PYTHONPATH', '')}",
    }
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "macelab.train", *overrides],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - started
    (out / f"{workload}_n{devices}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        return {"workload": workload, "devices": devices, "failed": result.stderr[-2000:]}
    metrics = pd.read_csv(run_dir / "metrics.csv")
    epochs = metrics.dropna(subset=["time/train_epoch_s"])
    epoch_s = epochs["time/train_epoch_s"].to_numpy()
    info = json.loads((run_dir / "run_info.json").read_text())
    val = metrics.dropna(subset=["val/forces_rmse_meV_per_A"]).iloc[-1]
    memory = [json.loads(p.read_text()) for p in sorted(run_dir.glob("peak_memory_rank*.json"))]
    steps_per_epoch = info["global_step"] / max(info["epochs"], 1)
    configs_per_epoch = float(epochs["time/train_configurations"].iloc[-1])
    steady = epoch_s[1:] if len(epoch_s) > 1 else epoch_s  # the first epoch warms up
    return {
        "workload": workload,
        "devices": devices,
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
    }


def table(records: list[dict]) -> str:
    header = (
        "workload", "GPUs", "epochs", "steps", "s / epoch (train)", "configs/s",
        "scaling eff.", "peak MiB per GPU", "val F RMSE (meV/Å)", "val E RMSE (meV)",
    )  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = {r["workload"]: r for r in records if r["devices"] == 1 and "failed" not in r}
    for r in records:
        if "failed" in r:
            lines.append(f"| {r['workload']} | {r['devices']} | FAILED: {r['failed'][-200:]!r} |")
            continue
        ref = base.get(r["workload"])
        efficiency = (
            r["throughput_configs_per_s"] / (r["devices"] * ref["throughput_configs_per_s"])
            if ref
            else float("nan")
        )
        memory = ", ".join("—" if m is None else f"{m:.0f}" for m in r["peak_memory_MiB_per_rank"])
        lines.append(
            f"| {r['workload']} | {r['devices']} | {r['epochs']} | {r['optimizer_steps']} | "
            f"{r['train_epoch_s_median']:.2f} | {r['throughput_configs_per_s']:.1f} | "
            f"{efficiency:.2f} | {memory} | {r['val_forces_rmse_meV_per_A']:.1f} | "
            f"{r['val_energy_rmse_meV']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for workload in args.workloads:
        for devices in args.devices:
            print(f"{workload} on {devices} device(s) ...", flush=True)
            records.append(run_one(args.out, workload, devices, args))
            (args.out / "ddp_scaling.json").write_text(json.dumps(records, indent=2))
    text = table(records)
    (args.out / "ddp_scaling.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
