"""The wandb sweep files are valid sweeps whose parameters are Hydra overrides of the real
config, one agent-style command runs offline, and a tiny multirun writes a right summary."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from macelab.config import CONFIG_DIR, run_name_from_overrides

SWEEPS = sorted((Path(__file__).resolve().parents[2] / "sweeps").glob("*.yaml"))


def _values(spec: dict) -> list:
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec["min"], spec["max"]]  # a distribution: its bounds


def _override(key: str, value) -> str:
    return f"{key}='{value}'" if key == "precision" else f"{key}={value}"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_file_is_valid_and_composes(path):
    sweep = yaml.safe_load(path.read_text())
    assert {"program", "method", "metric", "parameters", "command"} <= set(sweep)
    assert sweep["method"] in {"grid", "random", "bayes"}
    assert {"name", "goal"} <= set(sweep["metric"])
    assert "${args_no_hyphens}" in sweep["command"]
    names = list(sweep["parameters"])
    choices = [_values(sweep["parameters"][name]) for name in names]
    # every value of every parameter, each with the first value of the others
    combos = {tuple(c[0] for c in choices)}
    for i, values in enumerate(choices):
        for value in values:
            combos.add(tuple(value if j == i else c[0] for j, c in enumerate(choices)))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for combo in combos:
            cfg = compose(
                "train", overrides=[_override(n, v) for n, v in zip(names, combo, strict=True)]
            )
            assert cfg.model.correlation is not None
    GlobalHydra.instance().clear()
    assert len(list(itertools.islice(combos, 2))) >= 1


TINY = [
    "model/size=tiny",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "data.num_train=20",
    "data.num_valid=5",
    "data.batch_size=5",
]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MACELAB_CACHE": str(tmp_path / "cache")}


@pytest.mark.slow
def test_agent_style_command_runs_offline(tmp_path):
    """What the wandb agent runs (args without hyphens), offline."""
    run = tmp_path / "run"
    args = ["precision=bf16-mixed", "model.correlation=2", "logger=wandb", *TINY]
    env = {**_env(tmp_path), "WANDB_MODE": "offline", "WANDB_DIR": str(run)}
    result = subprocess.run(
        [sys.executable, "-m", "macelab.train", *args, f"hydra.run.dir={run}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (offline,) = list(run.rglob("offline-run-*"))
    assert (run / "results.json").exists()
    # the wandb run is named after the task and the overrides (conf/logger/wandb.yaml)
    hydra = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]
    name = "quickstart_" + run_name_from_overrides(hydra["job"]["override_dirname"])
    assert "model.correlation=2" in name
    assert any(name.encode() in path.read_bytes() for path in offline.glob("*.wandb"))


@pytest.mark.slow
def test_multirun_summary_has_one_row_per_run_including_failures(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "macelab.train",
            "-m",
            *TINY,
            "model.correlation=1,2",
            "data.num_valid=5,0",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=900,
    )
    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 4, (summary, result.stderr[-2000:])
    ok = summary[summary["status"] == "COMPLETED"]
    assert len(ok) == 2 and (summary["status"] == "FAILED").sum() == 2
    for _, row in ok.iterrows():
        results = json.loads((sweep / str(row["run"]) / "results.json").read_text())
        value = results["test_MD_300K"]["forces_rmse_meV_per_A"]
        assert row["test_MD_300K/forces_rmse_meV_per_A"] == pytest.approx(value)
    assert "FAILED" in (sweep / "summary.md").read_text()
