"""The precision study's recipes compose into training configs, and its results file and
table come from the raw files of real runs (the 2026-12-07 AcAc runs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.studies.precision_study import PARTS, PRECISIONS, TWO_SEEDS, main, path_for
from macelab.cli import quote_numeric_group_options
from macelab.precision import precision_names
from tests.training.conftest import compose_run_config

RUNS = Path(__file__).parents[2] / "benchmarks/results/2026-12-07_h100_acac_recipes_b3502c2"


def _recipes(part: str) -> dict[str, list[str]]:
    return {line.split("=", 1)[0]: line.split("=", 1)[1].split() for line in PARTS[part]()}


def test_budget_recipes_cover_every_precision_with_the_asked_seeds():
    recipes = _recipes("budget")
    assert set(PRECISIONS) <= set(precision_names())
    for precision in PRECISIONS:
        seeds = [n for n in recipes if n.rsplit("_s", 1)[0] == precision]
        assert len(seeds) == (2 if precision in TWO_SEEDS else 1)
    assert len(recipes) == len(PRECISIONS) + len(TWO_SEEDS)
    # paths: compiled only where the model runs in its own dtype
    assert path_for("32") != path_for("bf16-mixed") != path_for("16-mixed")


@pytest.mark.parametrize("part", list(PARTS))
def test_every_recipe_composes_into_a_training_config(part, tmp_path):
    for name, overrides in _recipes(part).items():
        argv = quote_numeric_group_options(["experiment=acac", *overrides])  # as the CLI does
        cfg = compose_run_config("train", argv, tmp_path / name)
        assert cfg.training.scheduler.name == "cosine", name
        assert cfg.training.stage_two.start_fraction == 0.8, name
        if part == "experiments" and name.startswith("progressive"):
            assert not cfg.runtime.compile and not cfg.runtime.cuda_graphs


def test_collect_and_table_come_from_the_run_folders(tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    # the finish step's equivariance report, as macelab.precision_report writes it
    report = {
        "results": {"32": {"forces_equivariance_max": 3.0e-7, "energy_equivariance_max": 1e-7}}
    }
    (runs / "cosine" / "precision_report").mkdir()
    (runs / "cosine" / "precision_report" / "precision_report.json").write_text(json.dumps(report))
    out = tmp_path / "study.json"
    assert main(["collect", str(runs), "--out", str(out)]) == 0
    study = json.loads(out.read_text())
    runs_by_name = {r["name"]: r for r in study["runs"]}
    assert set(runs_by_name) == {"cosine", "paper"}
    cosine = runs_by_name["cosine"]
    results = json.loads((RUNS / "cosine" / "results.json").read_text())
    assert cosine["test"]["test_MD_300K"]["forces_rmse_meV_per_A"] == pytest.approx(
        results["test_MD_300K"]["forces_rmse_meV_per_A"]
    )
    assert cosine["precision"] == "32" and cosine["seed"] == 0 and cosine["epochs"] == 165
    assert 30 < cosine["ms_per_step"] < 50  # 3.6 s epochs of 90 steps (two runs on one GPU)
    assert cosine["equivariance"]["forces_equivariance_max"] == 3.0e-7
    assert runs_by_name["paper"]["equivariance"] is None
    assert cosine["validation"][0]["elapsed_s"] < cosine["validation"][-1]["elapsed_s"]
    capsys.readouterr()
    assert main(["table", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("| cosine |"))
    assert "| 32 | 0 | compiled |" in row and "2.07 / 10.55" in row and "3.0e-07" in row
    assert lines[-1].startswith("| paper (Table 3)")


def test_the_sweep_script_names_every_part():
    script = (Path(__file__).parents[2] / "sweeps" / "precision_study.sh").read_text()
    assert "usage: precision_study.sh " + "|".join(PARTS) in script
