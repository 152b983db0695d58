"""Accuracy after the same training budget, per precision: AcAc, fixed wall time each.

Trains ``python -m macelab.train experiment=acac precision=X trainer.max_time=...`` for each
precision in turn (same seed, split, model and hyperparameters; only the precision differs),
one after the other on the same device, and collects per run: epochs done, the best
validation force RMSE, the test-set energy and force RMSE of the final (EMA) weights, and
the training throughput. A precision whose run fails (e.g. non-finite loss) is recorded
with its error, and the others still run.

    python benchmarks/studies/precision_budget.py --budget-s 60 --out DIR                  # GPU
    python benchmarks/studies/precision_budget.py --budget-s 60 --out DIR \\
        --precisions 64,32,bf16-mixed                                            # a subset
    python benchmarks/studies/precision_budget.py --tiny --device cpu --budget-s 5 --out DIR

Writes ``DIR/precision_budget.json`` and ``DIR/precision_budget.md`` (and each run's folder
under ``DIR/runs/``) and prints the table last.
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

DEFAULT = (
    "64",
    "32",
    "bf16-mixed",
    "policy_safe",
    "policy_aggressive",
    "policy_layerwise",
    "policy_layerwise_reverse",
)
TEST_SETS = ("test_MD_300K", "test_MD_600K")
TINY = [
    "model.channels=16",
    "model.max_L=1",
    "model.correlation=2",
    "data.num_train=30",
    "data.num_valid=10",
    "trainer.limit_test_batches=1",
]


def max_time(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` max_time string."""
    s = max(int(seconds), 1)
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_one(out: Path, precision: str, budget_s: float, device: str, tiny: bool, seed: int):
    """Train one precision for ``budget_s``; its metrics, or its error."""
    run_dir = out / "runs" / precision
    overrides = [
        "experiment=acac",
        f"precision={precision}",
        f"hydra.run.dir={run_dir}",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"trainer.max_time={max_time(budget_s)}",
        "trainer.max_epochs=100000",
        "trainer.enable_progress_bar=false",
        f"seed={seed}",
        *(TINY if tiny else []),
    ]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "macelab.train", *overrides], capture_output=True, text=True
    )
    record: dict = {"precision": precision, "wall_s": time.perf_counter() - started}
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / f"{precision}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        lines = [x.strip() for x in (result.stderr or result.stdout).splitlines() if x.strip()]
        # the first lines of an error paragraph say what; tracebacks end with it
        main_line = next((x for x in lines if "Error" in x or "Could not" in x), "")
        record["error"] = (main_line or " ".join(lines[-3:]))[:500].replace("|", "/")
        return record
    import pandas as pd

    metrics = pd.read_csv(run_dir / "metrics.csv")
    column = "val/forces_rmse_meV_per_A"
    curve = metrics.dropna(subset=[column]) if column in metrics else metrics.iloc[:0]
    tests = json.loads((run_dir / "results.json").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    steps = info.get("global_step") or 0
    configs = steps * (info.get("global_batch_size") or 0)
    record.update(
        epochs=info.get("epochs"),
        steps=steps,
        skipped_steps=info.get("skipped_steps"),
        validations=len(curve),
        best_val_forces_rmse_meV_per_A=float(curve[column].min()) if len(curve) else None,
        last_val_forces_rmse_meV_per_A=float(curve[column].iloc[-1]) if len(curve) else None,
        test={name: tests[name] for name in TEST_SETS if name in tests},
        train_seconds=info.get("train_seconds"),
        train_configs_per_s=configs / info["train_seconds"] if info.get("train_seconds") else None,
    )
    return record


def _cell(value, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def table(record: dict) -> str:
    """The markdown table of a record."""
    lines = [
        "| precision | epochs in budget | configs/s (incl. validation) | "
        "best val F RMSE (meV/Å) | "
        + " | ".join(f"{t} E / F RMSE (meV, meV/Å)" for t in TEST_SETS)
        + " | note |",
        "|---|---|---|---|" + "---|" * len(TEST_SETS) + "---|",
    ]
    for r in record["runs"]:
        cells = []
        for name in TEST_SETS:
            t = r.get("test", {}).get(name)
            cells.append(
                "—" if not t else f"{t['energy_rmse_meV']:.2f} / {t['forces_rmse_meV_per_A']:.2f}"
            )
        note = r.get("error", "")
        lines.append(
            f"| {r['precision']} | {_cell(r.get('epochs'), 'd')} | "
            f"{_cell(r.get('train_configs_per_s'), '.1f')} | "
            f"{_cell(r.get('best_val_forces_rmse_meV_per_A'))} | "
            + " | ".join(cells)
            + f" | {note} |"
        )
    header = (
        f"AcAc, {record['budget_s']:.0f} s of training per precision, {record['device_name']}, "
        f"{record['date']}{' (tiny settings)' if record['tiny'] else ''}\n\n"
    )
    return header + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--precisions", default=",".join(DEFAULT))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and split (checks)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from benchmarks.report import run_meta  # torch: imported after the arguments parse

    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "budget_s": args.budget_s,
        **run_meta("studies/precision_budget.py", argv, args.device),
        "tiny": args.tiny,
        "runs": [],
    }
    for precision in args.precisions.split(","):
        print(f"{precision} ...", flush=True)
        record["runs"].append(
            run_one(args.out, precision, args.budget_s, args.device, args.tiny, args.seed)
        )
        (args.out / "precision_budget.json").write_text(json.dumps(record, indent=2))
    markdown = table(record)
    (args.out / "precision_budget.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
