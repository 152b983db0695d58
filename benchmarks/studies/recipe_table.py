"""The table of AcAc training runs (one recipe per folder) from their raw files.

Each run folder holds what ``benchmarks/gpu/reproduce_acac.sh`` copies back: ``results.json``
(the run's test of ``best.ckpt``), ``run_info.json``, ``metrics.csv`` and ``recipe``. The
table gives, per recipe, the epochs and wall time, the best validation force RMSE and
where it was, the validation errors at the end of stage one and at the end of the run, and
the test RMSE on each AcAc test set beside the paper's Table 3.

    python benchmarks/studies/recipe_table.py benchmarks/results/<folder>
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

PAPER = {"test_MD_300K": (0.9, 5.1), "test_MD_600K": (4.6, 22.4)}  # Table 3: E meV, F meV/Å


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


def validations(rows: list[dict[str, str]]) -> list[dict[str, float]]:
    rows = [r for r in rows if r.get("val/forces_rmse_meV_per_A")]
    return [
        {
            "epoch": float(r["epoch"]),
            "E": float(r["val/energy_rmse_meV"]),
            "F": float(r["val/forces_rmse_meV_per_A"]),
        }
        for r in rows
    ]


def epoch_seconds(rows: list[dict[str, str]]) -> float:
    times = [float(r["time/train_epoch_s"]) for r in rows if r.get("time/train_epoch_s")]
    return statistics.median(times)


def stage_two_start(rows: list[dict[str, str]], stage_two_lr: float | None) -> float | None:
    """The first epoch of stage two: from the logged ``train/stage``, or in runs older than
    that column from the learning rate (the first epoch at stage two's rate; a cosine that
    ends at stage two's rate can make this up to one epoch early)."""
    stages = [(float(r["epoch"]), float(r["train/stage"])) for r in rows if r.get("train/stage")]
    if stages:
        return next((e for e, stage in stages if stage == 2.0), None)
    if not stage_two_lr:
        return None
    epochs = [float(r["epoch"]) for r in rows if r.get("lr")]
    lrs = [float(r["lr"]) for r in rows if r.get("lr")]
    at_rate = [abs(lr - stage_two_lr) <= 1e-6 * stage_two_lr for lr in lrs]
    # the first epoch from which the rate stays at stage two's
    for i in range(len(at_rate)):
        if all(at_rate[i:]):
            return epochs[i]
    return None


def row(run: Path) -> list[str]:
    """One table row for the run folder ``run``."""
    results = json.loads((run / "results.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    rows = read_rows(run / "metrics.csv")
    val = validations(rows)
    best = min(val, key=lambda v: v["F"])
    stage_two = stage_two_start(rows, info.get("stage_two_lr"))
    before = [v for v in val if stage_two is None or v["epoch"] < stage_two]

    def test(name: str, forces: bool = True) -> str:
        metrics = results[name]
        text = f"{metrics['energy_rmse_meV']:.2f}"
        return text + (f" / {metrics['forces_rmse_meV_per_A']:.2f}" if forces else "")

    return [
        run.name,
        f"{info['epochs']} ({epoch_seconds(rows):.1f} s)",
        f"{info['train_seconds'] / 60:.1f}",
        f"{best['F']:.2f} (epoch {int(best['epoch'])})",
        f"{before[-1]['E']:.2f} / {before[-1]['F']:.2f}",
        f"{val[-1]['E']:.2f} / {val[-1]['F']:.2f}",
        test("test_MD_300K"),
        test("test_MD_600K"),
        test("test_H_transfer", forces=False),
        test("test_dihedral", forces=False),
    ]


def table(folder: Path) -> str:
    """The markdown table of every run folder under ``folder`` (those with results.json)."""
    header = [
        "recipe",
        "epochs (median s each)",
        "training (min)",
        "best val F (where)",
        "val E / F before stage two",
        "val E / F at the end",
        "test 300 K E / F",
        "test 600 K E / F",
        "H-transfer E",
        "dihedral E",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in sorted(p for p in folder.iterdir() if (p / "results.json").is_file()):
        lines.append("| " + " | ".join(row(run)) + " |")
    paper = ["paper (Table 3)", "", "", "", "", ""]
    paper += [f"{e} / {f}" for e, f in PAPER.values()] + ["", ""]
    lines.append("| " + " | ".join(paper) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a results folder with one run per recipe")
    print(table(parser.parse_args().folder))


if __name__ == "__main__":
    main()
