"""The Hydra and Lightning conventions users look for: the metric the task function returns
(hparams_search=optuna), early stopping, the learning-rate monitor, run folders and wandb
runs named after the overrides (the wandb offline run itself: tests/sweeps/test_sweep_files.py),
the TensorBoard logger, and clear messages when the optional package behind a logger or the
Optuna sweeper is missing."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from macelab.cli import missing_plugin, prepare_argv
from macelab.config import CONFIG_DIR, run_name_from_overrides
from macelab.errors import ConfigError
from macelab.train import fit_and_test, optimized_metric
from macelab.training.callbacks import LearningRateMonitor
from tests.cli import cli_env
from tests.training.conftest import TINY


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def test_run_folders_are_named_after_the_overrides():
    cfg = _compose(["model/size=tiny", "precision='64'", "data.root=/some/where/data"])
    name = "data.root=data,model.size=tiny,precision=64"
    assert cfg.hydra.run.dir.endswith(f"_{name}")
    assert cfg.hydra.run.dir.startswith("outputs/quickstart/runs/")
    assert not _compose([]).hydra.run.dir.endswith("_")  # no overrides: the time alone


def test_long_override_lists_are_cut_with_a_hash():
    overrides = ",".join(f"training.loss.weight_{i}={i}" for i in range(30))
    name = run_name_from_overrides(overrides)
    assert len(name) == 120 and name != run_name_from_overrides(overrides + ",seed=1")


def test_wandb_run_name_says_what_was_overridden(compose_config):
    cfg = compose_config("train", ["logger=wandb", "model.correlation=2", "precision='64'"])
    assert cfg.logger.wandb.name == "quickstart_logger=wandb,model.correlation=2,precision=64"


def test_default_callbacks_monitor_the_learning_rate_and_early_stopping_is_one_override():
    assert "early_stopping" not in _compose([]).callbacks
    callbacks = _compose(["callbacks=early_stopping"]).callbacks
    assert callbacks.learning_rate_monitor._target_.endswith("LearningRateMonitor")
    assert callbacks.early_stopping.monitor == callbacks.best_checkpoint.monitor
    assert callbacks.best_checkpoint.monitor == "val/forces_rmse_meV_per_A"


def test_learning_rate_monitor_is_silent_without_a_logger():
    """logger=none: Lightning's monitor would refuse to train; macelab's logs nothing."""
    monitor = LearningRateMonitor(logging_interval="epoch")
    trainer = SimpleNamespace(loggers=[])
    monitor.on_train_start(trainer)
    monitor.on_train_epoch_start(trainer)


@pytest.mark.slow
def test_tensorboard_early_stopping_and_the_optimised_metric(compose_config):
    """A tiny run with logger=tensorboard and callbacks=early_stopping that no epoch can
    satisfy: it stops after patience + 1 epochs, logs the learning rate, and returns the
    best validation force RMSE (the score of the tested best.ckpt) as its metric."""
    pytest.importorskip("tensorboard", reason="pip install 'macelab[tensorboard]'")
    cfg = compose_config(
        "train",
        [
            *TINY,
            "logger=tensorboard",
            "callbacks=early_stopping",
            "callbacks.early_stopping.patience=1",
            "callbacks.early_stopping.min_delta=1e9",  # no epoch counts as an improvement
            "trainer.max_epochs=5",
            "trainer.limit_train_batches=2",
            "optimized_metric=val/forces_rmse_meV_per_A",
        ],
    )
    outcome = fit_and_test(cfg)
    run_dir = Path(cfg.paths.output_dir)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["epochs"] == 2 and info["peak_memory_MiB"] is None  # no GPU peak on a CPU
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    with open(run_dir / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    learning_rates = [float(r["lr-Adam/decay"]) for r in rows if r.get("lr-Adam/decay")]
    assert learning_rates == [0.01, 0.01]  # one per epoch start

    key = "val/forces_rmse_meV_per_A"
    validation = [float(r[key]) for r in rows if r.get(key)]
    value = optimized_metric(outcome.metrics, cfg.optimized_metric)
    assert value == pytest.approx(min(validation), rel=1e-6)
    test_name = "test/test_MD_300K/forces_rmse_meV_per_A"
    assert outcome.metrics[test_name] == outcome.results["test_MD_300K"]["forces_rmse_meV_per_A"]
    assert optimized_metric(outcome.metrics, None) is None
    with pytest.raises(ConfigError, match="val/forces_rmse_meV_per_A"):
        optimized_metric(outcome.metrics, "val/force_rmse")


def test_a_metric_no_run_logs_is_refused_before_training(compose_config):
    cfg = compose_config("train", [*TINY, "optimized_metric=forces_rmse"])
    with pytest.raises(ConfigError, match="optimized_metric=forces_rmse"):
        fit_and_test(cfg)


@pytest.mark.slow
def test_optuna_search_runs_trials_and_minimises_the_returned_metric(tmp_path):
    """hparams_search=optuna: two trials of one batch each; Optuna keeps the lowest of the
    metrics they returned (each trial's validation force RMSE)."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs macelab[hparams]")
    sweep = tmp_path / "sweep"
    args = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "model/size=tiny",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "macelab.train", *args],
        capture_output=True,
        text=True,
        env=cli_env(MACELAB_CACHE=str(tmp_path / "cache")),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import yaml

    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) >= {"training.optimizer.lr", "model.correlation"}
    trials = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert len(trials) == 2 and trials[0].name.startswith("0_")
    scores = []
    for trial in trials:
        with open(trial / "metrics.csv") as stream:
            rows = [r for r in csv.DictReader(stream) if r.get("val/forces_rmse_meV_per_A")]
        scores.append(float(rows[-1]["val/forces_rmse_meV_per_A"]))
    assert best["best_value"] == pytest.approx(min(scores), rel=1e-6)


def test_missing_optional_packages_are_named_with_their_extra(monkeypatch, compose_config):
    for module in ("wandb", "tensorboard", "tensorboardX"):
        monkeypatch.setitem(sys.modules, module, None)  # imports of it now fail
    for logger, extra in (("wandb", "wandb"), ("tensorboard", "tensorboard")):
        cfg = compose_config("train", [f"logger={logger}"])
        with pytest.raises(Exception) as caught:
            instantiate(cfg.logger[logger])
        error = caught.value
        while not isinstance(error, ConfigError) and error.__cause__ is not None:
            error = error.__cause__
        assert isinstance(error, ConfigError), caught.value
        assert f"pip install 'macelab[{extra}]'" in str(error)


def test_hparams_search_without_the_sweeper_plugin_names_the_extra(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if "optuna" in name else real(name, *a),
    )
    message = missing_plugin(["model/size=tiny", "hparams_search=optuna"])
    assert message is not None and "pip install 'macelab[hparams]'" in message
    assert missing_plugin(["hparams_search=null", "model/size=tiny"]) is None
    # the entry points (python -m and the console scripts) stop there: exit 2, one paragraph
    monkeypatch.setattr(sys, "argv", ["macelab-train", "hparams_search=optuna"])
    with pytest.raises(SystemExit) as caught:
        prepare_argv()
    assert caught.value.code == 2
    assert "macelab[hparams]" in capsys.readouterr().err
