"""Compose the real Hydra configs of the entry points for tests, without the command line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from macelab.config import CONFIG_DIR

# A tiny model and a short run: real training, a few seconds on two CPU cores.
TINY = [
    "model/size=tiny",
    "model.correlation=2",
    "logger=csv",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "data.num_valid=10",
    "data.num_train=60",
    "data.batch_size=5",
    "precision='64'",
]


def compose_run_config(config_name: str, overrides: list[str], run_dir: Path) -> DictConfig:
    """The composed config of an entry point, with ``run_dir`` as its run folder."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
        cfg.paths.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def compose_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``compose_config("train", [...overrides])`` -> a config whose run folder is tmp_path."""

    def _compose(config_name: str, overrides: list[str], output_dir: Path | None = None):
        return compose_run_config(config_name, overrides, output_dir or tmp_path / "run")

    yield _compose
    GlobalHydra.instance().clear()
