"""The recipe table is generated from the raw files it cites (2026-12-07 AcAc runs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from benchmarks.studies.recipe_table import read_rows, stage_two_start, table

RUNS = Path(__file__).parents[2] / "benchmarks/results/2026-12-07_h100_acac_recipes_b3502c2"


def test_table_rows_carry_each_runs_test_errors():
    lines = table(RUNS).splitlines()
    assert lines[-1].startswith("| paper (Table 3)")
    for name in ("cosine", "paper"):
        results = json.loads((RUNS / name / "results.json").read_text())
        line = next(line for line in lines if line.startswith(f"| {name} |"))
        md300 = results["test_MD_300K"]
        assert f"{md300['energy_rmse_meV']:.2f} / {md300['forces_rmse_meV_per_A']:.2f}" in line
        assert f"{results['test_dihedral']['energy_rmse_meV']:.2f}" in line


def test_stage_two_start_is_read_from_the_learning_rate_of_older_runs(tmp_path):
    # paper recipe: plateau at 1e-2, stage two at 1e-3 (logged as float32)
    start = stage_two_start(read_rows(RUNS / "paper" / "metrics.csv"), 1e-3)
    with open(RUNS / "paper" / "metrics.csv") as stream:
        rates = {float(r["epoch"]): float(r["lr"]) for r in csv.DictReader(stream) if r.get("lr")}
    assert rates[start] < 2e-3 < rates[start - 1]
    # the logged stage column wins where it exists
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,lr,train/stage\n0,0.01,1\n1,0.01,1\n2,0.001,2\n")
    assert stage_two_start(read_rows(path), 5e-3) == 2.0
