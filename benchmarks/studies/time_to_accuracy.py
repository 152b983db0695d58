"""Time to accuracy: macelab and mace-torch's own trainer on AcAc, same budget, side by side.

Both train the MACE paper's AcAc model (``experiment=acac``: 256 channels, L = 2, nu = 3,
float64, batch 5, lr 0.01 AMSGrad, EMA 0.99, plateau schedule) on the same 450 training and
50 validation configurations (macelab's seeded split, written to extended XYZ for
mace-torch), with the same E0s (the isolated atoms) and the same loss (mace-torch's
``weighted`` loss: per-atom energy, weights 1 / 1000), for the same wall-clock budget each,
one after the other on the same GPU. The validation force RMSE is recorded against wall
time for both (macelab: its ``time/elapsed_s`` metric; mace-torch: a watcher that stamps
each validation line of its metrics file as it appears), and the test sets are evaluated at
the end (mace-torch: by restarting its trainer from its latest checkpoint with no epochs
left, which runs its own final evaluation).

macelab trains on the path given by ``--macelab-overrides`` (default ``FASTEST``: float32,
the Triton kernels, the compiled step), mace-torch in ``--mace-dtype`` (default float64, the
dtype its documentation recommends for training) with ``--mace-args`` added (for example
``--enable_cueq=True``). The headline is when mace-torch reached its best validation force
error of the budget, when macelab first reached that error, and the ratio of the two times
(``speedup``).

    python benchmarks/studies/time_to_accuracy.py --budget-s 480 --out DIR           # GPU
    python benchmarks/studies/time_to_accuracy.py --tiny --device cpu --out DIR      # a quick check
    # one side per call (each under 10 minutes), then the two together:
    python benchmarks/studies/time_to_accuracy.py --budget-s 480 --only macelab --out DIR
    python benchmarks/studies/time_to_accuracy.py --budget-s 480 --only mace-torch --out DIR
    python benchmarks/studies/time_to_accuracy.py --merge --out DIR

Writes ``DIR/<implementation>.json`` per side, then ``DIR/time_to_accuracy.json``,
``DIR/time_to_accuracy.md`` and ``DIR/time_to_accuracy.png`` and prints the table last.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ase.io

TEST_SETS = ("test_MD_300K", "test_MD_600K")  # the AcAc test sets with forces
IMPLEMENTATIONS = ("macelab", "mace-torch")
# macelab's fastest training path whose plain-SGD trajectory matched eager training on an
# H100 (the compiled step without CUDA graphs, 2026-12-07); its stage two is still under
# investigation (docs/reproduction.md), so use best.ckpt or stage two off until it passes
FASTEST = "precision=32 runtime.backend=triton runtime.compile=true runtime.cuda_graphs=false"


def packaged(name: str) -> Path:
    from macelab.data.packaged import PACKAGED_DIR

    return PACKAGED_DIR / "acac" / f"{name}.xyz.gz"


def read_packaged(name: str) -> list:
    with gzip.open(packaged(name), "rt") as stream:
        return ase.io.read(stream, index=":", format="extxyz")


def _with_ref_labels(frames: list) -> list:
    """Frames with labels under mace-torch's default keys (REF_energy, REF_forces)."""
    out = []
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = None
        copy.info["REF_energy"] = float(atoms.get_potential_energy())
        with contextlib.suppress(Exception):  # energy-only frames have no forces
            copy.arrays["REF_forces"] = atoms.get_forces().copy()
        out.append(copy)
    return out


def write_mace_inputs(folder: Path, num_valid: int, num_train: int | None, seed: int) -> dict:
    """The split macelab uses, as xyz files for mace-torch, and its E0s."""
    from macelab.data.splits import train_valid_split

    folder.mkdir(parents=True, exist_ok=True)
    frames = _with_ref_labels(read_packaged("train_300K"))
    train_idx, valid_idx = train_valid_split(
        len(frames), seed=seed, num_valid=num_valid, num_train=num_train
    )
    ase.io.write(folder / "train.xyz", [frames[i] for i in train_idx], format="extxyz")
    ase.io.write(folder / "valid.xyz", [frames[i] for i in valid_idx], format="extxyz")
    # One test file; mace-torch tables its test sets by config_type.
    test_frames = []
    for name in TEST_SETS:
        for atoms in _with_ref_labels(read_packaged(name)):
            atoms.info["config_type"] = name
            test_frames.append(atoms)
    ase.io.write(folder / "tests.xyz", test_frames, format="extxyz")
    e0s = {
        int(a.numbers[0]): float(a.get_potential_energy()) for a in read_packaged("isolated_atoms")
    }
    return {"train": len(train_idx), "valid": len(valid_idx), "e0s": e0s}


def model_args(tiny: bool) -> dict:
    return (
        {"channels": 16, "max_L": 1, "correlation": 2}
        if tiny
        else {"channels": 256, "max_L": 2, "correlation": 3}
    )


def _dd_hh_mm_ss(seconds: float) -> str:
    """Lightning's max_time string."""
    s = int(seconds)
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_macelab(
    out: Path, budget_s: float, device: str, tiny: bool, seed: int, path: str = ""
) -> dict:
    m = model_args(tiny)
    run_dir = out / "macelab"
    overrides = [
        "experiment=acac",
        f"hydra.run.dir={run_dir}",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"trainer.max_time={_dd_hh_mm_ss(budget_s)}",
        "trainer.max_epochs=100000",
        "trainer.enable_progress_bar=false",
        "training.loss.energy_per_atom=true",  # mace-torch's weighted loss, for a like-for-like run
        f"model.channels={m['channels']}",
        f"model.max_L={m['max_L']}",
        f"model.correlation={m['correlation']}",
        f"seed={seed}",
        *path.split(),
    ]
    if tiny:
        overrides += ["data.num_train=40", "data.num_valid=10", "trainer.limit_test_batches=2"]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "macelab.train", *overrides], capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    (out / "macelab.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"macelab failed (see {out / 'macelab.log'}):\n{result.stderr[-3000:]}")
    import pandas as pd

    metrics = pd.read_csv(run_dir / "metrics.csv")
    curve = metrics.dropna(subset=["val/forces_rmse_meV_per_A"])
    times = curve["time/elapsed_s"].to_numpy() if "time/elapsed_s" in curve else None
    tests = json.loads((run_dir / "results.json").read_text())
    return {
        "wall_s": wall,
        "curve_time_s": None if times is None else times.tolist(),
        "curve_epoch": curve["epoch"].tolist(),
        "curve_val_forces_rmse_meV_per_A": curve["val/forces_rmse_meV_per_A"].tolist(),
        "test": {name: tests[name] for name in TEST_SETS if name in tests},
        "run_info": json.loads((run_dir / "run_info.json").read_text()),
        "path": path,
    }


@dataclass(frozen=True)
class MaceSetup:
    """How mace-torch's trainer runs: its dtype and extra arguments (e.g. cuEquivariance)."""

    dtype: str = "float64"
    extra: tuple[str, ...] = ()


def mace_command(
    folder: Path, inputs: dict, device: str, tiny: bool, seed: int, epochs: int, setup: MaceSetup
):
    m = model_args(tiny)
    e0s = "{" + ", ".join(f"{z}: {e!r}" for z, e in sorted(inputs["e0s"].items())) + "}"
    launcher = os.environ.get("MACE_RUN_TRAIN", "mace_run_train").split()
    return [
        *launcher,
        "--name=acac",
        f"--work_dir={folder}",
        f"--train_file={folder / 'inputs' / 'train.xyz'}",
        f"--valid_file={folder / 'inputs' / 'valid.xyz'}",
        f"--test_file={folder / 'inputs' / 'tests.xyz'}",
        f"--E0s={e0s}",
        "--model=ScaleShiftMACE",  # E0 + scale * E_inter + shift, as macelab's default
        f"--num_channels={m['channels']}",
        f"--max_L={m['max_L']}",
        "--max_ell=3",
        f"--correlation={m['correlation']}",
        "--num_interactions=2",
        "--r_max=5.0",
        "--num_radial_basis=8",
        "--num_cutoff_basis=5",
        "--radial_MLP=[64, 64, 64]",
        "--MLP_irreps=16x0e",
        "--batch_size=5",
        "--valid_batch_size=10",
        "--lr=0.01",
        "--amsgrad",
        "--weight_decay=5e-7",
        "--scheduler=ReduceLROnPlateau",
        "--lr_factor=0.8",
        "--scheduler_patience=50",
        "--ema",
        "--ema_decay=0.99",
        "--loss=weighted",
        "--energy_weight=1.0",
        "--forces_weight=1000.0",
        "--error_table=TotalRMSE",
        f"--default_dtype={setup.dtype}",
        f"--device={device}",
        f"--max_num_epochs={epochs}",
        "--eval_interval=1",
        f"--seed={seed}",
        "--restart_latest",
        *setup.extra,
    ]


def run_mace(
    out: Path, inputs: dict, budget_s: float, device: str, tiny: bool, seed: int, setup: MaceSetup
) -> dict:
    folder = out / "mace"
    stamps: list[tuple[float, dict]] = []
    started = time.perf_counter()
    process = subprocess.Popen(
        mace_command(folder, inputs, device, tiny, seed, 100000, setup),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log_lines: list[str] = []
    reader = threading.Thread(target=lambda: log_lines.extend(process.stdout), daemon=True)
    reader.start()
    seen = 0
    while process.poll() is None and time.perf_counter() - started < budget_s:
        time.sleep(0.5)
        for path in (folder / "results").glob("*_train.txt"):
            lines = path.read_text().splitlines()
            for line in lines[seen:]:
                record = json.loads(line)
                if record.get("mode") == "eval":
                    stamps.append((time.perf_counter() - started, record))
            seen = len(lines)
    process.terminate()
    process.wait(timeout=60)
    reader.join(timeout=5)
    wall = time.perf_counter() - started
    (out / "mace_train.log").write_text("".join(log_lines))
    # Final evaluation by mace-torch itself: restart from its latest checkpoint, no epochs left.
    final = subprocess.run(
        mace_command(folder, inputs, device, tiny, seed, 1, setup),
        capture_output=True,
        text=True,
    )
    (out / "mace_eval.log").write_text(final.stdout + final.stderr)
    return {
        "wall_s": wall,
        "curve_time_s": [t for t, _ in stamps],
        "curve_epoch": [r.get("epoch") for _, r in stamps],
        "curve_val_forces_rmse_meV_per_A": [1000 * r["rmse_f"] for _, r in stamps],
        "test": parse_mace_test_table(final.stdout + final.stderr),
        "dtype": setup.dtype,
        "extra_args": list(setup.extra),
    }


def parse_mace_test_table(log: str) -> dict:
    """Test-set rows of mace-torch's final TotalRMSE error table, in meV and meV/Å."""
    results = {}
    for name in TEST_SETS:
        match = re.search(rf"\|\s*{name}(?:_Default)?\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", log)
        if match:
            results[name] = {
                "energy_rmse_meV": float(match.group(1)),
                "forces_rmse_meV_per_A": float(match.group(2)),
            }
    return results


def time_to_reach(times: list[float] | None, errors: list[float], target: float) -> float | None:
    """The first time a validation curve is at or below ``target`` (None: never)."""
    return next((t for t, e in zip(times or [], errors, strict=False) if e <= target), None)


def headline(record: dict) -> dict | None:
    """mace-torch's best validation force RMSE of the budget, when each got there, and the
    ratio of the two times (None without both curves)."""
    ours, theirs = record["macelab"], record["mace-torch"]
    if not ours["curve_time_s"] or not theirs["curve_time_s"]:
        return None
    errors = theirs["curve_val_forces_rmse_meV_per_A"]
    target = min(errors)
    mace_s = theirs["curve_time_s"][errors.index(target)]
    macelab_s = time_to_reach(ours["curve_time_s"], ours["curve_val_forces_rmse_meV_per_A"], target)
    return {
        "target_val_forces_rmse_meV_per_A": target,
        "mace_torch_s": mace_s,
        "macelab_s": macelab_s,
        "speedup": None if not macelab_s else mace_s / macelab_s,
    }


def report(out: Path, record: dict) -> str:
    lines = [
        "| implementation | setup | budget s | validations | best val F RMSE (meV/Å) | "
        + " | ".join(f"{n} E / F RMSE" for n in TEST_SETS)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(TEST_SETS),
    ]
    for name in IMPLEMENTATIONS:
        r = record[name]
        curve = r["curve_val_forces_rmse_meV_per_A"]
        cells = []
        for test in TEST_SETS:
            t = r["test"].get(test)
            cells.append(
                "—" if not t else f"{t['energy_rmse_meV']:.2f} / {t['forces_rmse_meV_per_A']:.2f}"
            )
        best = f"{min(curve):.2f}" if curve else "—"
        if name == "macelab":
            setup = r.get("path") or "experiment=acac"
        else:
            setup = " ".join([r.get("dtype", "float64"), *r.get("extra_args", [])])
        lines.append(
            f"| {name} | `{setup}` | {record['budget_s']:.0f} | {len(curve)} | {best} | "
            + " | ".join(cells)
            + " |"
        )
    head = record.get("headline")
    if head:
        reached = (
            f"macelab reached it after {head['macelab_s']:.0f} s: {head['speedup']:.1f}x sooner"
            if head["macelab_s"]
            else "macelab did not reach it in the budget"
        )
        lines += [
            "",
            f"mace-torch's best validation force RMSE, "
            f"{head['target_val_forces_rmse_meV_per_A']:.2f} meV/Å, came after "
            f"{head['mace_torch_s']:.0f} s; {reached}.",
        ]
    table = "\n".join(lines) + "\n"
    (out / "time_to_accuracy.md").write_text(table)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name in IMPLEMENTATIONS:
            r = record[name]
            if r["curve_time_s"]:
                ax.plot(
                    r["curve_time_s"], r["curve_val_forces_rmse_meV_per_A"], "o-", label=name, ms=3
                )
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("validation force RMSE (meV/Å)")
        ax.set_yscale("log")
        ax.set_title(f"AcAc, paper model, {record['device_name']}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "time_to_accuracy.png", dpi=120)
    except Exception as error:  # the table matters more than the plot
        print(f"plot failed: {error}", file=sys.stderr)
    return table


def merge(out: Path) -> dict:
    """The two sides' files (``DIR/macelab.json``, ``DIR/mace-torch.json``) as one record."""
    missing = [n for n in IMPLEMENTATIONS if not (out / f"{n}.json").is_file()]
    if missing:
        raise SystemExit(f"--merge: no {', '.join(missing)}.json in {out}; run --only first")
    sides = {n: json.loads((out / f"{n}.json").read_text()) for n in IMPLEMENTATIONS}
    record = {k: v for k, v in sides["macelab"].items() if k not in IMPLEMENTATIONS}
    record["commands"] = [sides[n]["command"] for n in IMPLEMENTATIONS]
    for name in IMPLEMENTATIONS:
        record[name] = sides[name][name]
    record["headline"] = headline(record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=180.0)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=IMPLEMENTATIONS, help="run one side (then --merge)")
    parser.add_argument("--merge", action="store_true", help="table the two sides' files")
    parser.add_argument("--macelab-overrides", default=FASTEST, help="macelab's training path")
    parser.add_argument("--mace-dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--mace-args", default="", help='e.g. "--enable_cueq=True"')
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.merge:
        import torch

        inputs = write_mace_inputs(
            args.out / "mace" / "inputs",
            num_valid=10 if args.tiny else 50,
            num_train=40 if args.tiny else None,
            seed=args.seed,
        )
        meta = {
            "budget_s": args.budget_s,
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "CPU",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "split": {k: inputs[k] for k in ("train", "valid")},
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "commit": os.environ.get("MACELAB_COMMIT"),
        }
        for name in [args.only] if args.only else IMPLEMENTATIONS:
            print(f"{name} ...", flush=True)
            if name == "macelab":
                side = run_macelab(
                    args.out,
                    args.budget_s,
                    args.device,
                    args.tiny,
                    args.seed,
                    args.macelab_overrides,
                )
            else:
                side = run_mace(
                    args.out,
                    inputs,
                    args.budget_s,
                    args.device,
                    args.tiny,
                    args.seed,
                    MaceSetup(args.mace_dtype, tuple(args.mace_args.split())),
                )
            (args.out / f"{name}.json").write_text(
                json.dumps({**meta, name: side}, indent=2, default=float)
            )
        if args.only:
            return 0
    record = merge(args.out)
    (args.out / "time_to_accuracy.json").write_text(json.dumps(record, indent=2, default=float))
    print(report(args.out, record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
