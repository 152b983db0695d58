"""``python -m macelab.evaluate`` on two DDP processes (CPU, gloo) gives the metrics of one
process on the same checkpoint: every structure of every AcAc test set counted once (two of
the sets have an odd number of structures, so the ranks' shards differ in size), and the
parity plots and prediction files show the whole sets (predictions gathered from both
ranks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from macelab.evaluate import run_evaluation
from macelab.train import run_training
from tests.training.conftest import TINY, compose_config  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

SIZES = {"test_MD_300K": 650, "test_MD_600K": 650, "test_H_transfer": 15, "test_dihedral": 45}


def _evaluate_on_two_processes(ckpt: Path, run: Path, cache: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MACELAB_CACHE": str(cache)}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "macelab.evaluate",
        f"ckpt_path={ckpt}",
        "batch_size=8",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"hydra.run.dir={run}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run / "results.json").read_text())


def test_two_process_evaluation_equals_one_process(compose_config, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MACELAB_CACHE", str(tmp_path / "cache"))
    train_cfg = compose_config("train", [*TINY, "trainer.max_epochs=1"])
    run_training(train_cfg)
    ckpt = Path(train_cfg.paths.output_dir) / "checkpoints" / "best.ckpt"

    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one = run_evaluation(
        compose_config("evaluate", [f"ckpt_path={ckpt}", "batch_size=8"], output_dir=one_dir)
    )
    two = _evaluate_on_two_processes(ckpt, two_dir, tmp_path / "cache")

    assert {name: m["num_structures"] for name, m in one.items()} == SIZES
    assert two.keys() == one.keys()
    for name, metrics in one.items():
        assert two[name].keys() == metrics.keys(), name
        for key, value in metrics.items():
            if key.startswith("num_"):  # counts: exactly equal
                assert two[name][key] == value, (name, key)
            else:  # float64 sums in a different order: equal to rounding
                assert two[name][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
    assert one["test_MD_300K"]["num_force_components"] == 650 * 15 * 3

    # The same points behind each parity plot: the two-process file holds both ranks'
    # shards (in another order), so compare sorted values; and both plots were drawn.
    for name in SIZES:
        a = np.load(one_dir / f"predictions_{name}.npz")
        b = np.load(two_dir / f"predictions_{name}.npz")
        assert sorted(a.files) == sorted(b.files), name
        for key in a.files:
            assert a[key].shape == b[key].shape, (name, key)
            np.testing.assert_allclose(
                np.sort(a[key].reshape(-1)), np.sort(b[key].reshape(-1)), rtol=1e-9, atol=1e-12
            )
        assert a["energy"].shape == (SIZES[name],), name
        assert (one_dir / f"parity_{name}.png").stat().st_size > 0, name
        assert (two_dir / f"parity_{name}.png").stat().st_size > 0, name
