"""benchmarks/studies/embedding_ablation.py end to end on the CPU with a tiny model: the full and a
rank-2 table train for the budget with finite errors, and the parameter counts at 89
elements fall with the rank; the tables and the plot are written."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.studies.embedding_ablation import error_line, overrides_for

ROOT = Path(__file__).resolve().parents[2]


def test_variants_map_to_overrides():
    assert overrides_for("full") == []
    assert overrides_for("low_rank:4") == ["model.embedding=low_rank", "model.embedding_rank=4"]
    assert overrides_for("int8") == ["model.embedding=int8"]
    for bad in ("low_rank", "low_rank:0", "int8:2", "half"):
        with pytest.raises(SystemExit):
            overrides_for(bad)


def test_error_line_names_the_failure_not_hydra_hint():
    text = (
        "Could not override 'model.embedding'.\nTo append to your config use +model.embedding=x\n"
        "Key 'embedding' is not in struct\n"
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    )
    assert error_line(text) == "Could not override 'model.embedding'."
    assert error_line("a\nlast words\n") == "last words"


@pytest.mark.slow
def test_tiny_ablation_full_and_rank_2(tmp_path):
    out = tmp_path / "ablation"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "studies" / "embedding_ablation.py"),
        "--tiny",
        "--device=cpu",
        "--budget-s=6",
        "--data=acac",
        "--variants=full,low_rank:2",
        f"--out={out}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MACELAB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "embedding_ablation.json").read_text())
    runs = {r["variant"]: r for r in record["runs"]}
    assert list(runs) == ["full", "low_rank:2"]
    for run in runs.values():
        assert "error" not in run, run.get("error")
        assert run["steps"] > 0 and run["ms_per_step"] > 0 and run["peak_rss_MiB"] > 0
        assert run["peak_cuda_MiB"] is None  # CPU
        assert math.isfinite(run["val"]["forces_rmse_meV_per_A"])
        assert run["val"]["forces_rmse_meV_per_A"] > 0
        assert math.isfinite(run["val"]["energy_per_atom_rmse_meV"])
        md300 = run["test"]["test_MD_300K"]
        assert math.isfinite(md300["forces_rmse_meV_per_A"]) and md300["forces_rmse_meV_per_A"] > 0
        assert math.isfinite(md300["energy_per_atom_rmse_meV"])
        # the in-process count at the data's elements is the trained model's
        assert run["counts"]["data"]["num_parameters"] == run["num_parameters"]
    full, low = runs["full"]["counts"], runs["low_rank:2"]["counts"]
    assert low["foundation"]["num_parameters"] < full["foundation"]["num_parameters"]
    assert low["foundation"]["table_parameters"] < full["foundation"]["table_parameters"] / 10
    # full tables grow with the elements; rank-2 factors add 2 per element and table
    grown = full["foundation"]["table_parameters"] - full["data"]["table_parameters"]
    assert grown == (89 - 3) * full["data"]["table_parameters"] // 3
    assert (out / "embedding_ablation.png").stat().st_size > 5_000
    markdown = (out / "embedding_ablation.md").read_text()
    assert f"| low_rank:2 | {runs['low_rank:2']['num_parameters']:,} |" in markdown
    assert f"{low['foundation']['num_parameters']:,}" in markdown
    assert markdown.strip() in result.stdout  # the table is printed last
