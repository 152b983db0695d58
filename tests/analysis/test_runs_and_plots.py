"""The analysis functions on fixed inputs written into temporary run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from macelab.analysis import plots
from macelab.analysis.md import read_md_log
from macelab.analysis.paper import compare_with_paper
from macelab.analysis.runs import (
    find_run_folders,
    load_learning_curve,
    load_runs,
    training_throughput,
    varied_columns,
)


def _write_run(folder: Path, precision: str, correlation: int, rmse: float, status: str | None):
    (folder / ".hydra").mkdir(parents=True)
    config = {
        "seed": 0,
        "benchmark": "acac",
        "precision": {"name": precision},
        "model": {"correlation": correlation, "channels": 16, "radial_mlp": [8, 8]},
    }
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if status is not None:
        (folder / "job_status.json").write_text(json.dumps({"status": status}))
    if status != "FAILED":
        results = {"test_MD_300K": {"forces_rmse_meV_per_A": rmse, "energy_rmse_meV": rmse / 10}}
        (folder / "results.json").write_text(json.dumps(results))
        (folder / "run_info.json").write_text(
            json.dumps({"train_seconds": 12.5, "num_parameters": 1000})
        )
        metrics = pd.DataFrame(
            {
                "epoch": [0, 0, 0, 1, 1, 1],
                "step": [4, 4, 4, 9, 9, 9],
                "val/forces_mae_meV_per_A": [rmse * 3, None, None, rmse * 2, None, None],
                "time/elapsed_s": [None, 1.5, None, None, 3.0, None],
                "time/train_epoch_s": [None, None, 1.0, None, None, 1.0],
                "time/train_configurations": [None, None, 50.0, None, None, 50.0],
            }
        )
        metrics.to_csv(folder / "metrics.csv", index=False)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    _write_run(tmp_path / "0", "32", 1, 40.0, "COMPLETED")
    _write_run(tmp_path / "1", "32", 2, 30.0, "COMPLETED")
    _write_run(tmp_path / "2", "bf16-mixed", 2, 35.0, None)
    _write_run(tmp_path / "10", "64", 3, 0.0, "FAILED")
    return tmp_path


def test_load_runs_keeps_what_varied_and_every_metric(sweep):
    runs = load_runs(sweep)
    assert list(runs["run"]) == ["0", "1", "2", "10"]  # natural order
    assert set(varied_columns(runs)) == {"precision.name", "model.correlation"}
    assert list(runs["status"]) == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]
    assert runs.loc[1, "test_MD_300K/forces_rmse_meV_per_A"] == 30.0
    assert np.isnan(runs.loc[3, "test_MD_300K/forces_rmse_meV_per_A"])
    assert runs.loc[0, "train_seconds"] == 12.5
    kept = load_runs(sweep, keep_config=["model.channels"])
    assert "model.channels" in kept.columns
    # kept, but the same in every run: not reported as varied (the sweep notebook did)
    assert set(varied_columns(kept)) == {"precision.name", "model.correlation"}


def test_find_run_folders_on_a_single_run(sweep):
    assert find_run_folders(sweep / "1") == [sweep / "1"]


def test_learning_curve_has_wall_time_per_validation(sweep):
    curve = load_learning_curve(sweep / "0")
    assert list(curve["step"]) == [4, 9]
    assert list(curve["elapsed_s"]) == [1.5, 3.0]
    assert list(curve["val/forces_mae_meV_per_A"]) == [120.0, 80.0]
    assert training_throughput(sweep / "0") == pytest.approx(50.0)


def test_pareto_front():
    points = np.array([[10.0, 5.0], [20.0, 6.0], [5.0, 4.0], [15.0, 7.0], [20.0, 9.0]])
    assert sorted(plots.pareto_front(points).tolist()) == [0, 1, 2]


def test_temperatures_from_test_set_names():
    assert plots.temperature_of("test_600K") == 600.0
    assert plots.temperature_of("test_MD_1200K") == 1200.0
    assert plots.temperature_of("test_dih") is None


def test_paper_comparison_for_acac():
    table = compare_with_paper({"test_MD_300K": {"forces_rmse_meV_per_A": 7.0}}, "acac")
    assert table.loc[0, "paper forces_rmse_meV_per_A"] == 5.1
    assert table.loc[0, "forces_rmse_meV_per_A"] == 7.0


def test_read_ase_md_log(tmp_path):
    log = tmp_path / "md.log"
    log.write_text(
        "Time[ps]      Etot[eV]     Epot[eV]     Ekin[eV]    T[K]\n"
        "0.0000         -10.0000     -10.5000       0.5000   300.0\n"
        "0.0050          -9.9990     -10.4000       0.4010   250.0\n"
    )
    frame = read_md_log(log)
    assert list(frame.columns) == ["time_ps", "etot_eV", "epot_eV", "ekin_eV", "temperature_K"]
    assert frame["etot_eV"].tolist() == [-10.0, -9.999]


def _labelled(fig) -> bool:
    return all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


def test_every_plot_has_a_title_and_labelled_axes(sweep, tmp_path):
    runs = load_runs(sweep)
    runs["throughput_configs_per_s"] = [training_throughput(p) for p in runs["path"]]
    rng = np.random.default_rng(0)
    arrays = {
        "energy": rng.normal(size=6),
        "energy_ref": rng.normal(size=6),
        "num_atoms": np.full(6, 15),
        "has_energy": np.ones(6, dtype=bool),
        "forces": rng.normal(size=(30, 3)),
        "forces_ref": rng.normal(size=(30, 3)),
        "info": [{"dihedral_angle": float(a)} for a in range(6)],
    }
    figures = [
        plots.learning_curves(runs, ["precision.name"]),
        plots.accuracy_vs_throughput(runs, "test_MD_300K/forces_rmse_meV_per_A"),
        plots.equivariance_by_precision({"32": {"forces_equivariance_rel_max": 1e-7}}),
        plots.equivariance_by_precision(None),
        plots.error_distribution({"test": arrays}),
        plots.error_vs_temperature(
            {"test_300K": {"energy_rmse_meV": 1.0, "forces_rmse_meV_per_A": 2.0}}
        ),
        plots.dihedral_curves(arrays),
        plots.md_energy_trace(read_md_log(_md_log(tmp_path))),
    ]
    for fig in figures:
        assert _labelled(fig)
    path = plots.save(figures[0], tmp_path / "figs", "curves")
    assert path.stat().st_size > 5_000


def _md_log(tmp_path: Path) -> Path:
    log = tmp_path / "trace.log"
    log.write_text(
        "Time[ps] Etot[eV] Epot[eV] Ekin[eV] T[K]\n0 -1 -1.5 0.5 300\n0.001 -1 -1.4 0.4 250\n"
    )
    return log


def test_figures_go_to_the_named_folder_or_the_working_one_never_a_checkout_root(
    tmp_path, monkeypatch
):
    assert plots.figures_folder(tmp_path / "named") == tmp_path / "named"
    assert (tmp_path / "named").is_dir()
    monkeypatch.chdir(tmp_path)
    assert plots.figures_folder() == tmp_path
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "src" / "macelab").mkdir(parents=True)
    assert plots.figures_folder() == tmp_path / "outputs" / "figures"


BACKEND_PROBE = """
import matplotlib
{setup}
matplotlib.use("module://matplotlib_inline.backend_inline")  # what ipykernel selects
import macelab.analysis.plots
print(matplotlib.get_backend())
"""


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("", "agg"),  # a script or a training run: headless
        ("from IPython.testing.globalipapp import start_ipython; start_ipython()", "inline"),
    ],
    ids=["script", "ipython"],
)
def test_plots_leave_the_backend_of_ipython_alone(setup, expected):
    """Importing macelab.analysis.plots selects Agg in a script but keeps the backend of an
    IPython shell (Jupyter's inline one shows figures under their cells)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    result = subprocess.run(
        [sys.executable, "-c", BACKEND_PROBE.format(setup=setup)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout.strip().lower(), result.stdout
