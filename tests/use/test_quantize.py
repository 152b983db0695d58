"""``python -m macelab.quantize``: an INT8-readout checkpoint of a model trained in the test,
loaded by load_model, the calculator and ``python -m macelab.evaluate``; its error against
the float model; user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import ase.io
import pytest
import torch

from macelab.calculator import MACECalculator
from macelab.data.locate import locate
from macelab.errors import ConfigError
from macelab.model.quantized import readout_format
from macelab.quantize import run_quantize
from macelab.train import run_training
from macelab.training.checkpoint import load_model
from tests.cli import cli_env
from tests.training.conftest import TINY, compose_config  # noqa: F401 (fixture)

# Stated bounds for the tiny AcAc model trained below (2 short epochs, float64). Measured on
# the first test batch of each AcAc test set: energy int8-float RMSE about 1 meV/atom, force
# RMSE about 0.3 meV/Å against errors to the labels of ~300 meV/atom and ~1000 meV/Å.
ENERGY_PER_ATOM_BOUND_MEV = 10.0
FORCE_RELATIVE_BOUND = 0.01  # int8-float force RMSE / float-label force RMSE


def _env() -> dict[str, str]:
    return cli_env()


@pytest.mark.slow
def test_quantized_checkpoint_loads_everywhere_with_a_small_error(compose_config, tmp_path):  # noqa: F811
    cfg = compose_config("train", TINY, output_dir=tmp_path / "run")
    run_training(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    out = tmp_path / "int8.ckpt"
    quantize_cfg = compose_config(
        "quantize",
        [f"ckpt_path={ckpt}", f"out={out}", "limit_test_batches=1", "accelerator=cpu"],
        output_dir=tmp_path / "quantize",
    )
    results = run_quantize(quantize_cfg)

    assert out.is_file()
    assert set(results) == {"test_MD_300K", "test_MD_600K", "test_H_transfer", "test_dihedral"}
    for name, metrics in results.items():
        assert 0 < metrics["energy_per_atom_int8_float_rmse_meV"] < ENERGY_PER_ATOM_BOUND_MEV
        assert metrics["forces_int8_float_rmse_meV_per_A"] > 0
        if metrics["labelled_force_components"]:
            ratio = (
                metrics["forces_int8_float_rmse_meV_per_A"]
                / (metrics["forces_float_ref_rmse_meV_per_A"])
            )
            assert ratio < FORCE_RELATIVE_BOUND, (name, metrics)
    written = json.loads((tmp_path / "quantize" / "quantize.json").read_text())
    for name, metrics in results.items():
        recorded = written["test_sets"][name]["energy_int8_float_rmse_meV"]
        assert recorded == pytest.approx(metrics["energy_int8_float_rmse_meV"], rel=1e-12)
    assert "E RMSE int8-float" in (tmp_path / "quantize" / "quantize.md").read_text()

    # load_model and the calculator: the INT8 model, not the float one
    float_model, _ = load_model(ckpt)
    int8_model, _ = load_model(out)
    assert readout_format(int8_model) == "int8" and readout_format(float_model) == "float"
    atoms = ase.io.read(locate("dataset_acac/test_MD_300K.xyz", download=False).path, index=0)
    energies = {}
    for label, source in (("float", str(ckpt)), ("int8", str(out))):
        atoms.calc = MACECalculator(source, precision="64")
        energies[label] = atoms.get_potential_energy()
        assert torch.isfinite(torch.as_tensor(atoms.get_forces())).all()
    assert 0 < abs(energies["int8"] - energies["float"]) < ENERGY_PER_ATOM_BOUND_MEV * 1e-3 * 15

    # python -m macelab.evaluate: the INT8 numbers of the comparison, on the same structures
    evaluation = tmp_path / "evaluate"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "macelab.evaluate",
            f"ckpt_path={out}",
            "limit_test_batches=1",
            "plots=false",
            "accelerator=cpu",
            f"hydra.run.dir={evaluation}",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((evaluation / "results.json").read_text())
    for name, metrics in results.items():
        assert evaluated[name]["energy_rmse_meV"] == pytest.approx(
            metrics["energy_int8_ref_rmse_meV"], rel=1e-9
        )


def test_unknown_readout_format_is_refused(compose_config, tmp_path):  # noqa: F811
    cfg = compose_config("quantize", [f"ckpt_path={tmp_path}/x.ckpt", "readout=fp4"])
    with pytest.raises(ConfigError, match="readout=int8"):
        run_quantize(cfg)


def test_wrong_checkpoint_path_exits_2_with_one_paragraph(tmp_path):
    missing = tmp_path / "nowhere" / "best.ckpt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "macelab.quantize",
            f"ckpt_path={missing}",
            "readout=int8",
            f"out={tmp_path / 'int8.ckpt'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip()
    assert message.startswith("error:") and "Traceback" not in message
    assert "\n\n" not in message and str(missing) in message.replace("\n", " ")
    assert not (tmp_path / "int8.ckpt").exists()
