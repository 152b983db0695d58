"""Progressive correlation order against nu = 3 from the start: AcAc, the same wall time each.

Trains ``python -m macelab.train experiment=acac trainer.max_time=...`` twice on the same
device, one after the other, with the same seed, split and model (built at correlation 3):

* ``fixed``: correlation order 3 from the first step;
* ``progressive``: ``callbacks=progressive_correlation`` with ``--schedule`` (``epoch:order``
  pairs, e.g. ``0:1,4:2,8:3``: order 1 from epoch 0, 2 from epoch 4, 3 from epoch 8).

From each run's ``metrics.csv`` it collects the validation force RMSE over wall time
(``time/elapsed_s``, the learning curve), the training time per optimiser step in each
phase of the schedule (``time/train_epoch_s`` over the epoch's steps, validation excluded),
and the test-set RMSE of the final EMA weights.

    python benchmarks/studies/progressive_ablation.py --budget-s 150 --out DIR              # GPU
    python benchmarks/studies/progressive_ablation.py --tiny --device cpu --budget-s 20 \\
        --schedule 0:1,1:2,2:3 --out DIR                                         # check

Writes ``DIR/progressive_ablation.json``, ``.md`` and ``.png`` (and the runs under
``DIR/runs/``) and prints the table last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.studies.precision_budget import TEST_SETS, TINY, max_time

VAL = "val/forces_rmse_meV_per_A"


def parse_schedule(text: str) -> list[list[int]]:
    """``"0:1,4:2,8:3"`` -> ``[[0, 1], [4, 2], [8, 3]]`` (epoch, correlation order)."""
    pairs = []
    for item in text.split(","):
        epoch, order = item.split(":")
        pairs.append([int(epoch), int(order)])
    return pairs


def overrides_for(variant: str, schedule: list[list[int]]) -> list[str]:
    """The Hydra overrides that make ``variant`` (``fixed`` or ``progressive``)."""
    if variant == "fixed":
        return []
    text = ",".join(f"[{e},{o}]" for e, o in schedule)
    return [
        "callbacks=progressive_correlation",
        f"callbacks.progressive_correlation.schedule=[{text}]",
    ]


def phases(metrics, steps_per_epoch: float) -> list[dict]:
    """Per correlation order: the epochs trained at it and the mean training ms per step."""
    import pandas as pd

    order_col, time_col = "train/correlation_order", "time/train_epoch_s"
    if time_col not in metrics:
        return []
    per_epoch = metrics.groupby("epoch").agg(
        {c: "max" for c in (order_col, time_col) if c in metrics}
    )
    per_epoch = per_epoch.dropna(subset=[time_col])
    if order_col not in per_epoch:
        per_epoch[order_col] = pd.NA
    result = []
    for order, group in per_epoch.groupby(order_col, dropna=False, sort=True):
        result.append(
            {
                "correlation_order": None if pd.isna(order) else int(order),
                "epochs": len(group),
                "ms_per_step": 1000 * float(group[time_col].mean()) / steps_per_epoch,
            }
        )
    return result


def run_one(out: Path, variant: str, args: argparse.Namespace) -> dict:
    """Train one variant for the budget; its curve, phases and test metrics, or its error."""
    run_dir = out / "runs" / variant
    overrides = [
        "experiment=acac",
        f"precision={args.precision}",
        f"hydra.run.dir={run_dir}",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"trainer.max_time={max_time(args.budget_s)}",
        "trainer.max_epochs=100000",
        "trainer.enable_progress_bar=false",
        f"seed={args.seed}",
        *overrides_for(variant, parse_schedule(args.schedule)),
        *(TINY if args.tiny else []),
    ]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "macelab.train", *overrides], capture_output=True, text=True
    )
    record: dict = {"variant": variant, "overrides": overrides, "wall_s": 0.0}
    record["wall_s"] = time.perf_counter() - started
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / f"{variant}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        lines = [x.strip() for x in (result.stderr or result.stdout).splitlines() if x.strip()]
        main_line = next((x for x in lines if "Error" in x), "")
        record["error"] = (main_line or " ".join(lines[-3:]))[:500].replace("|", "/")
        return record
    import pandas as pd

    metrics = pd.read_csv(run_dir / "metrics.csv")
    info = json.loads((run_dir / "run_info.json").read_text())
    tests = json.loads((run_dir / "results.json").read_text())
    steps, epochs = info.get("global_step") or 0, info.get("epochs") or 0
    curve = metrics.dropna(subset=[VAL]) if VAL in metrics else metrics.iloc[:0]
    elapsed = "time/elapsed_s"
    record.update(
        epochs=epochs,
        steps=steps,
        curve=[
            {"epoch": int(r["epoch"]), "elapsed_s": float(r[elapsed]), "val_F_rmse": float(r[VAL])}
            for _, r in curve.iterrows()
            if elapsed in curve and not pd.isna(r[elapsed])
        ],
        best_val_forces_rmse_meV_per_A=float(curve[VAL].min()) if len(curve) else None,
        phases=phases(metrics, steps / epochs) if epochs else [],
        test={name: tests[name] for name in TEST_SETS if name in tests},
    )
    return record


def _cell(value, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def table(record: dict) -> str:
    """Two markdown tables: per variant, and per phase of each variant."""
    lines = [
        f"AcAc, {record['budget_s']:.0f} s of training per variant, precision "
        f"{record['precision']}, schedule {record['schedule']}, {record['device_name']}, "
        f"{record['date']}{' (tiny settings)' if record['tiny'] else ''}",
        "",
        "| variant | epochs | steps | best val F RMSE (meV/Å) | "
        + " | ".join(f"{t} E / F RMSE" for t in TEST_SETS)
        + " | note |",
        "|---|---|---|---|" + "---|" * len(TEST_SETS) + "---|",
    ]
    for r in record["runs"]:
        cells = [
            f"{t['energy_rmse_meV']:.2f} / {t['forces_rmse_meV_per_A']:.2f}"
            if (t := r.get("test", {}).get(name))
            else "—"
            for name in TEST_SETS
        ]
        lines.append(
            f"| {r['variant']} | {_cell(r.get('epochs'), 'd')} | {_cell(r.get('steps'), 'd')} | "
            f"{_cell(r.get('best_val_forces_rmse_meV_per_A'))} | "
            + " | ".join(cells)
            + f" | {r.get('error', '')} |"
        )
    lines += ["", "| variant | correlation order | epochs | training ms / step |"]
    lines += ["|---|---|---|---|"]
    for r in record["runs"]:
        for p in r.get("phases", []):
            order = p["correlation_order"]
            order = "built (fixed)" if order is None else order
            lines.append(f"| {r['variant']} | {order} | {p['epochs']} | {p['ms_per_step']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    """Validation force RMSE over wall time, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in record["runs"]:
        if r.get("curve"):
            xs = [p["elapsed_s"] for p in r["curve"]]
            ys = [p["val_F_rmse"] for p in r["curve"]]
            ax.plot(xs, ys, marker="o", markersize=3, label=r["variant"])
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("validation force RMSE (meV/Å)")
    ax.set_yscale("log")
    ax.set_title(f"AcAc: progressive correlation vs nu = 3 ({record['device_name']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=150.0)
    parser.add_argument("--schedule", default="0:1,4:2,8:3", help="epoch:order pairs")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--variants", default="fixed,progressive")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and split (checks)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from benchmarks.report import run_meta  # torch: imported after the arguments parse

    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "budget_s": args.budget_s,
        "schedule": args.schedule,
        "precision": args.precision,
        **run_meta("studies/progressive_ablation.py", argv, args.device),
        "tiny": args.tiny,
        "runs": [],
    }
    for variant in args.variants.split(","):
        print(f"{variant} ...", flush=True)
        record["runs"].append(run_one(args.out, variant, args))
        (args.out / "progressive_ablation.json").write_text(json.dumps(record, indent=2))
    markdown = table(record)
    (args.out / "progressive_ablation.md").write_text(markdown)
    plot(record, args.out / "progressive_ablation.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
