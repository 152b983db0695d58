"""The composed training config: experiments and debug configs override the defaults."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from macelab.config import CONFIG_DIR


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_default_is_the_quick_start():
    cfg = _compose()
    assert cfg.task_name == "quickstart"
    assert cfg.model.channels == 128 and cfg.model.max_L == 0
    assert cfg.data.dataset == "acac"


def test_experiment_values_override_the_primary_config():
    cfg = _compose("experiment=acac")
    assert cfg.task_name == "acac"
    assert cfg.training.loss.forces_weight == 1000.0  # train.yaml says 100
    assert cfg.training.loss.energy_per_atom is False
    assert cfg.precision.name == "64"
    assert (cfg.model.channels, cfg.model.max_L) == (256, 2)


def test_command_line_overrides_beat_experiments():
    cfg = _compose("experiment=acac", "training.loss.forces_weight=7", "precision='32'")
    assert cfg.training.loss.forces_weight == 7
    assert cfg.precision.name == "32"


def test_rmd17_experiment_names_the_molecule():
    cfg = _compose("experiment=rmd17", "data.molecule=ethanol")
    assert cfg.task_name == "rmd17_ethanol"
    assert cfg.benchmark == "rmd17/ethanol"
