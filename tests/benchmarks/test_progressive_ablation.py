"""benchmarks/studies/progressive_ablation.py end to end on the CPU with a tiny model: both variants
train for the budget, the progressive run's phases follow its schedule, and the fixed run
has one phase; the curve, the tables and the plot are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_ablation_runs_both_variants(tmp_path):
    out = tmp_path / "ablation"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "studies" / "progressive_ablation.py"),
        "--tiny",
        "--device=cpu",
        "--budget-s=8",
        "--schedule=0:1,1:2",
        f"--out={out}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "progressive_ablation.json").read_text())
    runs = {r["variant"]: r for r in record["runs"]}
    assert set(runs) == {"fixed", "progressive"}
    for run in runs.values():
        assert "error" not in run, run.get("error")
        assert run["epochs"] >= 2 and run["steps"] > 0
        assert run["curve"] and all(p["elapsed_s"] > 0 for p in run["curve"])
        assert all(p["ms_per_step"] > 0 for p in run["phases"])
        assert run["test"]["test_MD_300K"]["forces_rmse_meV_per_A"] > 0
    orders = [p["correlation_order"] for p in runs["progressive"]["phases"]]
    assert orders == [1, 2]
    assert runs["progressive"]["phases"][0]["epochs"] == 1  # order 1 in epoch 0 only
    assert len(runs["fixed"]["phases"]) == 1
    assert (out / "progressive_ablation.png").stat().st_size > 0
    assert "| progressive | 2 |" in (out / "progressive_ablation.md").read_text()
