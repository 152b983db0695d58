"""The notebooks run top to bottom (papermill): the analysis notebooks on runs made here by
the real entry point (a tiny training run and a tiny two-run multirun), the experiments
notebook on benchmarks/results and on a folder with a tiny embedding ablation. Every figure a
notebook saves as PNG is also shown under its cell (an ``image/png`` output), as Jupyter
shows it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model/size=tiny",
    "model.correlation=1",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "data.num_train=20",
    "data.num_valid=5",
    "data.batch_size=5",
]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MACELAB_CACHE": str(tmp / "cache")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("runs")
    single, sweep = tmp / "single", tmp / "sweep"
    command = [sys.executable, "-m", "macelab.train"]
    subprocess.run(
        [*command, *TINY, f"hydra.run.dir={single}"], check=True, env=_env(tmp), capture_output=True
    )
    subprocess.run(
        [*command, "-m", *TINY, "precision=32,bf16-mixed", f"hydra.sweep.dir={sweep}"],
        check=True,
        env=_env(tmp),
        capture_output=True,
    )
    return {"single": single, "sweep": sweep}


def _execute(notebook: str, runs_dir: Path, out: Path, **parameters) -> None:
    import papermill

    out.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(ROOT / "notebooks" / notebook),
        str(out / notebook),
        parameters={"runs_dir": str(runs_dir), **parameters},
        cwd=str(out),
        kernel_name="python3",
        progress_bar=False,
    )


def _png_outputs(notebook: Path) -> int:
    """The number of ``image/png`` outputs (figures shown inline) of an executed notebook."""
    cells = json.loads(notebook.read_text())["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


def test_sweep_analysis_notebook(runs, tmp_path):
    assert (runs["sweep"] / "summary.csv").is_file()
    _execute("sweep_analysis.ipynb", runs["sweep"], tmp_path)
    names = ("learning_curves", "accuracy_vs_throughput", "equivariance_by_precision")
    for name in names:
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000, name
    assert _png_outputs(tmp_path / "sweep_analysis.ipynb") == len(names)


def test_model_analysis_notebook(runs, tmp_path):
    _execute("model_analysis.ipynb", runs["single"], tmp_path, max_structures=10, md_steps=10)
    pngs = {p.name for p in tmp_path.glob("*.png")}
    expected = {
        "parity_test_MD_300K.png",
        "error_distribution.png",
        "error_vs_temperature.png",
        "dihedral_test_dihedral.png",
        "md_energy_trace.png",
    }
    assert expected <= pngs, pngs
    # one parity figure per test set of AcAc (4), the error distribution, the error against
    # temperature, the dihedral scan and the MD trace
    assert len(pngs) == 8, pngs
    assert _png_outputs(tmp_path / "model_analysis.ipynb") == len(pngs)


def test_experiments_notebook_on_the_stored_results(tmp_path):
    """benchmarks/results as it is: the INT8 readout, the progressive log's tables and the
    H100 embedding ablation."""
    import papermill

    papermill.execute_notebook(
        str(ROOT / "notebooks" / "experiments.ipynb"),
        str(tmp_path / "experiments.ipynb"),
        parameters={"results_dir": str(ROOT / "benchmarks" / "results")},
        cwd=str(tmp_path),
        kernel_name="python3",
        progress_bar=False,
    )
    for name in ("int8_readout", "progressive_phases", "embedding_ablation"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000, name
    assert _png_outputs(tmp_path / "experiments.ipynb") == len(list(tmp_path.glob("*.png")))


def test_experiments_notebook_with_an_embedding_ablation(tmp_path):
    """A results folder with a tiny embedding ablation made here and progressive curves."""
    import papermill

    results = tmp_path / "results"
    results.mkdir()
    stored = ROOT / "benchmarks" / "results"
    shutil.copy(stored / "2026-11-24_h100_int8_readout.json", results)
    ablation = tmp_path / "ablation"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "studies" / "embedding_ablation.py"),
            *("--tiny", "--device=cpu", "--budget-s=4", "--data=acac"),
            *("--variants=full,low_rank:1", f"--out={ablation}"),
        ],
        check=True,
        env={**_env(tmp_path), "MACELAB_OFFLINE": "1"},
        capture_output=True,
    )
    shutil.copy(ablation / "embedding_ablation.json", results / "cpu_embedding_ablation.json")
    curve = [
        {"epoch": e, "elapsed_s": 10.0 * (e + 1), "val_F_rmse": 100.0 / (e + 1)} for e in range(3)
    ]
    progressive = {
        "device_name": "CPU",
        "runs": [{"variant": "fixed", "epochs": 3, "curve": curve}],
    }
    (results / "cpu_progressive_ablation.json").write_text(json.dumps(progressive))
    out = tmp_path / "notebook"
    out.mkdir()
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "experiments.ipynb"),
        str(out / "experiments.ipynb"),
        parameters={"results_dir": str(results), "figures_dir": str(out)},
        cwd=str(tmp_path),
        kernel_name="python3",
        progress_bar=False,
    )
    for name in ("int8_readout", "progressive_ablation", "embedding_ablation"):
        assert (out / f"{name}.png").stat().st_size > 5_000, name
    assert _png_outputs(out / "experiments.ipynb") == 3
    assert not list(tmp_path.glob("*.png")), "figures_dir names the folder, not the working one"
    notebook = json.loads((out / "experiments.ipynb").read_text())
    outputs = json.dumps([c.get("outputs", []) for c in notebook["cells"]])
    assert "low_rank:1" in outputs and "no embedding ablation" not in outputs


def test_precision_study_notebook_on_a_collected_results_file(tmp_path):
    """The study notebook on the committed collection of the 2026-12-07 AcAc runs (two
    float32 recipes: no per-stage runs, so no stage figure) and on a file with a per-stage
    run and its float32 reference added (every figure)."""
    import papermill

    stored = ROOT / "benchmarks/results/2026-12-07_h100_acac_recipes_b3502c2_collected.json"
    study = json.loads(stored.read_text())
    reference, lowered = dict(study["runs"][0]), dict(study["runs"][1])
    reference["name"], lowered["name"], lowered["precision"] = (
        "fp32_graphs",
        "x",
        "lower_readout_bf16",
    )
    study["runs"] += [reference, lowered]
    extended = tmp_path / "extended.json"
    extended.write_text(json.dumps(study))
    expected = {"study_validation_curves.png", "study_accuracy_vs_cost.png"}
    for path, pngs in ((stored, expected), (extended, expected | {"study_stages.png"})):
        out = tmp_path / path.stem
        out.mkdir()
        papermill.execute_notebook(
            str(ROOT / "notebooks" / "precision_study.ipynb"),
            str(out / "precision_study.ipynb"),
            parameters={"study_file": str(path)},
            cwd=str(out),
            kernel_name="python3",
            progress_bar=False,
        )
        assert {p.name for p in out.glob("*.png")} == pngs
        assert _png_outputs(out / "precision_study.ipynb") == len(pngs)
