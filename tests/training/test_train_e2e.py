"""End to end on real data: train, evaluate, resume, and refuse what cannot work."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from macelab.errors import ConfigError
from macelab.evaluate import run_evaluation
from macelab.train import run_training
from tests.training.conftest import TINY
from tests.training.killer import KilledError

pytestmark = pytest.mark.slow


def _val_force_rmse(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    key = "val/forces_rmse_meV_per_A"
    return [float(r[key]) for r in rows if r.get(key)]


def test_short_training_lowers_validation_force_error_and_evaluate_reproduces_it(
    compose_config, tmp_path
):
    cfg = compose_config("train", [*TINY, "trainer.max_epochs=4", "trainer.limit_train_batches=12"])
    results = run_training(cfg)
    run_dir = Path(cfg.paths.output_dir)

    curve = _val_force_rmse(run_dir)
    assert len(curve) == 4
    assert curve[-1] < 0.8 * curve[0], curve

    saved = json.loads((run_dir / "results.json").read_text())
    assert set(saved) == {"test_MD_300K", "test_MD_600K", "test_H_transfer", "test_dihedral"}
    assert saved["test_MD_300K"]["num_structures"] == 20  # limit_test_batches=2, batches of 10
    assert "forces_rmse_meV_per_A" in saved["test_MD_300K"]
    assert "forces_rmse_meV_per_A" not in saved["test_H_transfer"]  # energies only
    assert math.isfinite(saved["test_MD_600K"]["energy_rmse_meV"])
    assert saved == json.loads(json.dumps(results))
    assert "paper 5.1" in (run_dir / "results.md").read_text()  # AcAc 300 K force RMSE

    best = run_dir / "checkpoints" / "best.ckpt"
    eval_dir = tmp_path / "eval"
    eval_cfg = compose_config(
        "evaluate",
        [f"ckpt_path={best}", "limit_test_batches=2"],
        output_dir=eval_dir,
    )
    evaluated = run_evaluation(eval_cfg)
    for name, metrics in saved.items():
        for key, value in metrics.items():
            assert evaluated[name][key] == pytest.approx(value, rel=1e-9, abs=1e-9), (name, key)
    assert (eval_dir / "parity_test_MD_300K.png").stat().st_size > 10_000


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Weights, EMA weights, optimiser moments, scheduler state and progress of last.ckpt."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    state = {k: v for k, v in checkpoint["state_dict"].items()}
    for index, moments in checkpoint["optimizer_states"][0]["state"].items():
        for name, value in moments.items():
            state[f"adam.{index}.{name}"] = torch.as_tensor(value)
    for name, value in checkpoint["macelab"]["lr_scheduler"].items():
        if isinstance(value, (int, float)):
            state[f"scheduler.{name}"] = torch.tensor(float(value), dtype=torch.float64)
    state["global_step"] = torch.tensor(checkpoint["global_step"])
    state["epoch"] = torch.tensor(checkpoint["epoch"])
    for name, value in checkpoint["macelab"]["ema"]["shadow"].items():
        state[f"ema.{name}"] = value
    return state


# Killed mid-epoch, right after an epoch's last batch (before its validation), and just after.
@pytest.mark.parametrize("kill_after_step", [2, 4, 5])
def test_resume_after_a_kill_equals_an_uninterrupted_run(compose_config, tmp_path, kill_after_step):
    common = [
        *TINY,
        "model.channels=8",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=null",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.num_train=20",  # 4 batches of 5 per epoch
        "callbacks.last_checkpoint.every_n_train_steps=1",
    ]
    straight = compose_config("train", common, output_dir=tmp_path / "straight")
    run_training(straight)

    interrupted_dir = tmp_path / "interrupted"
    killer = [
        "+callbacks.kill._target_=tests.training.killer.KillAfterStep",
        f"+callbacks.kill.step={kill_after_step}",
    ]
    first = compose_config("train", [*common, *killer], output_dir=interrupted_dir)
    with pytest.raises(KilledError):
        run_training(first)
    resumed = compose_config("train", [*common, "ckpt_path=last"], output_dir=interrupted_dir)
    run_training(resumed)

    expected = _final_state(tmp_path / "straight")
    actual = _final_state(interrupted_dir)
    assert expected.keys() == actual.keys()
    # float64 throughout; the runs agree to the last bits (we have seen at most one ulp of
    # difference, from the summation order of vectorised CPU kernels), far below any change a
    # wrong data order, optimiser, scheduler or EMA state would make (> 1e-6 after one step).
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-12, atol=1e-14, msg=key)


def test_checkpoint_from_an_incompatible_config_is_refused(compose_config, tmp_path):
    cfg = compose_config("train", [*TINY, "trainer.max_epochs=1"], output_dir=tmp_path / "a")
    run_training(cfg)
    other = compose_config(
        "train", [*TINY, "model.channels=24", "ckpt_path=last"], output_dir=tmp_path / "a"
    )
    with pytest.raises(ConfigError, match="channels"):
        run_training(other)
