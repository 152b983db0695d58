"""The trained model in use: NVE energy conservation, the MD command line, checkpoints and
ensembles in the calculator."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import ase.io
import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from macelab.calculator import MACECalculator
from macelab.data.locate import locate
from macelab.train import run_training
from macelab.training.checkpoint import load_model
from tests.training.conftest import TINY, compose_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

# Stated bound: |E_total(end) - E_total(start)| per atom over 300 velocity-Verlet steps of
# 0.5 fs at 300 K, float64 (a 20-step CLI run of the same model drifted 3.6e-5 eV/atom).
NVE_DRIFT_BOUND = 1e-4


@pytest.fixture
def checkpoint(compose_config, tmp_path):  # noqa: F811
    cfg = compose_config("train", [*TINY, "trainer.max_epochs=1"], output_dir=tmp_path / "run")
    run_training(cfg)
    return tmp_path / "run" / "checkpoints" / "best.ckpt"


def _acac(tmp_path):
    atoms = ase.io.read(locate("dataset_acac/test_MD_300K.xyz", download=False).path, index=0)
    path = tmp_path / "acac.xyz"
    ase.io.write(path, atoms)
    return atoms, path


def test_nve_conserves_energy_and_the_cli_writes_its_files(checkpoint, tmp_path):
    atoms, structure = _acac(tmp_path)
    atoms.calc = MACECalculator(str(checkpoint), precision="64")
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    start = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=0.5 * units.fs).run(300)
    drift = abs(atoms.get_total_energy() - start) / len(atoms)
    assert drift < NVE_DRIFT_BOUND, drift

    run = tmp_path / "md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "macelab.md",
            f"ckpt_path={checkpoint}",
            f"structure={structure}",
            "steps=20",
            "log_every=5",
            "precision=32",  # a group, as for training (issue 33)
            "accelerate=null",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [x for x in (run / "md.log").read_text().splitlines() if not x.startswith("#")]
    assert len(lines) == 5  # the start and every 5 steps
    assert len(ase.io.read(run / "trajectory.extxyz", index=":")) == 5
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "macelab.md",
            f"ckpt_path={checkpoint}",
            f"structure={tmp_path / 'missing.xyz'}",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "missing.xyz" in bad.stderr


def test_ensemble_mean_and_spread(checkpoint, tmp_path):
    atoms, _ = _acac(tmp_path)
    model, _ = load_model(checkpoint)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.mul_(1.05)
    singles = []
    for member in (model, other):
        atoms.calc = MACECalculator(member)
        singles.append((atoms.get_potential_energy(), atoms.get_forces()))
    atoms.calc = MACECalculator([model, other])
    np.testing.assert_allclose(atoms.get_potential_energy(), np.mean([s[0] for s in singles]))
    np.testing.assert_allclose(atoms.get_forces(), np.mean([s[1] for s in singles], axis=0))
    spread = atoms.calc.results["forces_std"]
    np.testing.assert_allclose(spread, np.std([s[1] for s in singles], axis=0))
    assert atoms.calc.results["forces_uncertainty"].shape == (len(atoms),)
    assert atoms.calc.results["energy_std"] > 0
    atoms.calc = MACECalculator([str(checkpoint), str(checkpoint)])  # paths; same model
    atoms.get_potential_energy()
    assert np.abs(atoms.calc.results["forces_std"]).max() == 0.0
