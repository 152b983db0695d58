"""The precision study (issue 28): its training runs as recipes, and its results as one file.

Three steps, the first and last on any machine, the middle on GPUs:

    # 1. the recipes, "name=overrides" lines that benchmarks/gpu/reproduce_acac.sh reads
    python benchmarks/studies/precision_study.py recipes --part budget    # item 2
    python benchmarks/studies/precision_study.py recipes --part stages    # item 3
    python benchmarks/studies/precision_study.py recipes --part experiments  # item 5
    # 2. train them, the same wall-clock budget each (sweeps/precision_study.sh does 1-3)
    RECIPES="$(python benchmarks/studies/precision_study.py recipes --part budget)" \\
        MAX_TIME=00:00:20:00 bash benchmarks/gpu/reproduce_acac.sh start   # then wait, finish
    # 3. one raw results file from the run folders, and its tables
    python benchmarks/studies/precision_study.py collect RUNS_FOLDER --out FILE.json
    python benchmarks/studies/precision_study.py table FILE.json

Every recipe shares the reproduction's schedule (``COMMON``: cosine with warm-up, stage two
for the last 20% of the budget) and trains on the fastest runtime path its precision can
use (``path_for``). ``notebooks/precision_study.ipynb`` draws the figures from the file that
``collect`` writes; docs/study.md has the protocol and the results.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yaml

from benchmarks.studies import stage_ablation
from benchmarks.studies.recipe_table import (
    PAPER,
    epoch_seconds,
    read_rows,
    stage_two_start,
    validations,
)

# The reproduction's schedule (docs/reproduction.md), shared by every recipe of the study.
COMMON = (
    "training.scheduler.name=cosine",
    "training.scheduler.warmup_epochs=5",
    "training.stage_two.start_fraction=0.8",
    "training.stage_two.lr=2e-4",
)
# Item 2: every precision of conf/precision; two seeds where the issue asks for them.
PRECISIONS = (
    "32",
    "tf32",
    "bf16-mixed",
    "16-mixed",
    "policy_safe",
    "policy_safe_fp16",
    "policy_layerwise",
    "policy_layerwise_reverse",
    "policy_aggressive",
)
TWO_SEEDS = ("32", "bf16-mixed", "policy_safe", "policy_layerwise")
# The runtime paths (conf/runtime); reproduce_acac.sh's PATH_FLAGS set the backend (triton).
COMPILED = ("runtime.compile=true", "runtime.cuda_graphs=false")
GRAPHED = ("runtime.compile=false", "runtime.cuda_graphs=true")
EAGER = ("runtime.compile=false", "runtime.cuda_graphs=false")
# Item 5: the other experiments (docs/experiments.md), float32, two seeds each.
EXPERIMENTS = {
    "progressive_doc": (
        "callbacks=progressive_correlation",
        "callbacks.progressive_correlation.schedule=[[0,1],[50,2],[150,3]]",
    ),
    "progressive_short": (
        "callbacks=progressive_correlation",
        "callbacks.progressive_correlation.schedule=[[0,1],[10,2],[30,3]]",
    ),
    "embedding_rank2": ("model.embedding=low_rank", "model.embedding_rank=2"),
    "embedding_rank4": ("model.embedding=low_rank", "model.embedding_rank=4"),
    "embedding_int8": ("model.embedding=int8",),
}


def path_for(precision: str) -> tuple[str, ...]:
    """The fastest path a precision trains on: the compiled step runs the model in its own
    dtype only (32, tf32); autocast and per-stage policies replay CUDA graphs of the eager
    step; fp16 loss scaling (16-mixed) takes neither."""
    if precision in ("32", "tf32", "64"):
        return COMPILED
    if precision == "16-mixed":
        return EAGER
    return GRAPHED


def budget_recipes() -> list[str]:
    lines = []
    for precision in PRECISIONS:
        for seed in (0, 1) if precision in TWO_SEEDS else (0,):
            flags = [f"precision={precision}", f"seed={seed}", *path_for(precision), *COMMON]
            lines.append(f"{precision}_s{seed}={' '.join(flags)}")
    return lines


def stage_recipes() -> list[str]:
    """Item 3's per-stage ablation (benchmarks/studies/stage_ablation.py), on COMMON."""
    lines = stage_ablation.recipes(list(stage_ablation.GROUPS), ["bf16", "fp16"])
    return [f"{line} {' '.join(COMMON)}" for line in lines]


def experiment_recipes() -> list[str]:
    lines = []
    for name, flags in EXPERIMENTS.items():
        # the correlation order changes while training: no traced or captured step
        path = EAGER if name.startswith("progressive") else path_for("32")
        for seed in (0, 1):
            overrides = ["precision=32", f"seed={seed}", *path, *flags, *COMMON]
            lines.append(f"{name}_s{seed}={' '.join(overrides)}")
    return lines


PARTS = {"budget": budget_recipes, "stages": stage_recipes, "experiments": experiment_recipes}


# ---------------------------------------------------------------------------- collecting
def _first(run: Path, *names: str) -> Path | None:
    return next((run / n for n in names if (run / n).is_file()), None)


def _config(run: Path) -> dict[str, Any]:
    path = _first(run, ".hydra/config.yaml", "config.yaml")
    return yaml.safe_load(path.read_text()) if path else {}


def _recipe(run: Path) -> str:
    path = _first(run, ".recipe", "recipe")
    # a resumed run's .recipe has one line per segment: the first is what it started as
    return path.read_text().strip().splitlines()[0] if path else ""


def _equivariance(run: Path, precision: str) -> dict[str, float] | None:
    """The trained model's equivariance errors at its own precision, where the finish step
    of reproduce_acac.sh measured them (``python -m macelab.precision_report``)."""
    path = _first(run, "precision_report/precision_report.json", "precision_report.json")
    if path is None:
        return None
    own = json.loads(path.read_text())["results"].get(precision)
    return None if own is None else {k: v for k, v in own.items() if "equivariance" in k}


def run_record(run: Path) -> dict[str, Any]:
    """Everything the study's tables and figures need from one run folder."""
    results = json.loads((run / "results.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    config = _config(run)
    rows = read_rows(run / "metrics.csv")
    steps_per_epoch = info["global_step"] / max(info["epochs"], 1)
    curve = [
        (
            float(r["time/elapsed_s"]),
            float(r["val/energy_rmse_meV"]),
            float(r["val/forces_rmse_meV_per_A"]),
        )
        for r in rows
        if r.get("val/forces_rmse_meV_per_A") and r.get("time/elapsed_s")
    ]
    validated = validations(rows)
    runtime = config.get("runtime", {})
    precision = str(config.get("precision", {}).get("name", "?"))
    return {
        "name": run.name,
        "recipe": _recipe(run),
        "precision": precision,
        "seed": config.get("seed"),
        "runtime": {k: runtime.get(k) for k in ("backend", "compile", "cuda_graphs")},
        "epochs": info["epochs"],
        "steps": info["global_step"],
        "train_seconds": info["train_seconds"],
        "ms_per_step": 1e3 * epoch_seconds(rows) / steps_per_epoch,
        "peak_memory_MiB": info.get("peak_memory_MiB"),
        "skipped_steps": info.get("skipped_steps"),
        "stage_two_epoch": stage_two_start(rows, info.get("stage_two_lr")),
        "best_val_forces_rmse": min(v["F"] for v in validated) if validated else None,
        "validation": [{"elapsed_s": t, "energy_rmse": e, "forces_rmse": f} for t, e, f in curve],
        "test": {
            name: {
                "energy_rmse_meV": metrics.get("energy_rmse_meV"),
                "forces_rmse_meV_per_A": metrics.get("forces_rmse_meV_per_A"),
            }
            for name, metrics in results.items()
            if isinstance(metrics, dict)
        },
        "equivariance": _equivariance(run, precision),
    }


def collect(folders: list[Path]) -> dict[str, Any]:
    runs = []
    for folder in folders:
        for run in sorted(p for p in folder.iterdir() if (p / "results.json").is_file()):
            runs.append({"source": str(folder), **run_record(run)})
    if not runs:
        raise SystemExit(f"no run folder with results.json under {[str(f) for f in folders]}")
    return {
        "study": "precision_study",
        "collected": datetime.now(UTC).isoformat(timespec="seconds"),
        "paper": {
            name: {"energy_rmse_meV": e, "forces_rmse_meV_per_A": f}
            for name, (e, f) in PAPER.items()
        },
        "runs": runs,
    }


# ----------------------------------------------------------------------------- tables
def _cell(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _test(run: dict[str, Any], name: str, forces: bool = True) -> str:
    metrics = run["test"].get(name)
    if metrics is None:
        return "—"
    text = _cell(metrics["energy_rmse_meV"])
    return text + (f" / {_cell(metrics['forces_rmse_meV_per_A'])}" if forces else "")


def _path(run: dict[str, Any]) -> str:
    runtime = run["runtime"]
    if runtime.get("compile"):
        return "compiled"
    return "graphs" if runtime.get("cuda_graphs") else "eager"


def table(study: dict[str, Any]) -> str:
    """One row per run, then the paper's Table 3."""
    header = [
        "run",
        "precision",
        "seed",
        "path",
        "ms / step",
        "peak MiB",
        "skipped steps",
        "epochs",
        "test 300 K E / F",
        "test 600 K E / F",
        "H-transfer E",
        "dihedral E",
        "F equivariance",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in study["runs"]:
        peak = run["peak_memory_MiB"]
        equivariance = (run["equivariance"] or {}).get("forces_equivariance_max")
        cells = [
            run["name"],
            run["precision"],
            str(run["seed"]),
            _path(run),
            _cell(run["ms_per_step"], 1),
            _cell(peak.get("reserved") if isinstance(peak, dict) else peak, 0),
            str(run["skipped_steps"]),
            str(run["epochs"]),
            _test(run, "test_MD_300K"),
            _test(run, "test_MD_600K"),
            _test(run, "test_H_transfer", forces=False),
            _test(run, "test_dihedral", forces=False),
            "—" if equivariance is None else f"{equivariance:.1e}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    paper = ["paper (Table 3)", *[""] * 7]
    paper += [
        f"{p['energy_rmse_meV']} / {p['forces_rmse_meV_per_A']}" for p in study["paper"].values()
    ]
    lines.append("| " + " | ".join([*paper, "", "", ""]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    recipes = commands.add_parser("recipes", help="print one part's recipes")
    recipes.add_argument("--part", choices=list(PARTS), required=True)
    gather = commands.add_parser("collect", help="run folders -> one results file")
    gather.add_argument("folders", type=Path, nargs="+", help="folders of run folders")
    gather.add_argument("--out", type=Path, required=True)
    show = commands.add_parser("table", help="print a results file's table")
    show.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "recipes":
        print("\n".join(PARTS[args.part]()))
    elif args.command == "collect":
        study = collect(args.folders)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(study, indent=1) + "\n")
        print(table(study))
    else:
        print(table(json.loads(args.file.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
