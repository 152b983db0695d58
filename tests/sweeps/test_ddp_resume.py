"""A 2-process DDP run (CPU, gloo) stopped after its first epoch and resumed with
``ckpt_path=last`` ends exactly where an uninterrupted 2-epoch DDP run ends: weights, EMA,
optimiser moments, scheduler, step counters and test metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.sweeps.test_sweep_files import TINY
from tests.training.test_train_e2e import _final_state

pytestmark = pytest.mark.slow

DDP = [
    "trainer=ddp",
    "trainer.devices=2",
    *TINY,
    "precision='64'",
    "trainer.limit_train_batches=null",  # 20 structures / (5 x 2 ranks): 2 steps per epoch
    "trainer.limit_val_batches=null",
]


def _train(run: Path, cache: Path, *overrides: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MACELAB_CACHE": str(cache)}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "macelab.train", *DDP, *overrides, f"hydra.run.dir={run}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_ddp_run_resumed_after_an_epoch_equals_an_uninterrupted_one(tmp_path):
    cache = tmp_path / "cache"
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    _train(straight, cache, "trainer.max_epochs=2")
    _train(interrupted, cache, "trainer.max_epochs=1")
    after_one_epoch = _final_state(interrupted)
    _train(interrupted, cache, "trainer.max_epochs=2", "ckpt_path=last")

    expected, actual = _final_state(straight), _final_state(interrupted)
    assert int(actual["global_step"]) == 4 and int(after_one_epoch["global_step"]) == 2
    assert expected.keys() == actual.keys()
    # float64 on both ranks; the all-reduced gradients are summed in the same order, so the
    # runs agree to the last bits (tolerance: a few ulps). A wrong shard, data order,
    # optimiser, scheduler or EMA state after the resume changes weights by > 1e-6.
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-12, atol=1e-14, msg=key)
    changed = [k for k in expected if not torch.equal(after_one_epoch[k], expected[k])]
    assert any(k.startswith("model.") for k in changed)  # the second epoch did train

    straight_results = json.loads((straight / "results.json").read_text())
    resumed_results = json.loads((interrupted / "results.json").read_text())
    assert straight_results.keys() == resumed_results.keys()
    for name, metrics in straight_results.items():
        for key, value in metrics.items():
            assert resumed_results[name][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    info = json.loads((interrupted / "run_info.json").read_text())
    assert (info["world_size"], info["global_step"]) == (2, 4)
    assert info["cluster_environment"] == "LightningEnvironment"  # ranks started by Lightning
