"""conf/data/*.yaml instantiate the data module with the contract's keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from macelab.data.datamodule import MACEDataModule

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"
CONTRACT = {"dataset", "root", "r_max", "batch_size", "valid_batch_size", "seed", "num_workers",
            "e0s", "cache_dir"}  # fmt: skip


def compose(name: str, **overrides):
    """The data config inside a minimal run config (model.r_max and seed defined)."""
    data = OmegaConf.load(CONF / f"{name}.yaml")
    cfg = OmegaConf.create({"model": {"r_max": 4.5}, "seed": 7, "data": data})
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"data.{key}", value)
    return cfg


@pytest.mark.parametrize("name", ["acac", "3bpa", "rmd17", "xyz"])
def test_config_instantiates_with_model_r_max_and_seed(name, monkeypatch):
    monkeypatch.delenv("MACELAB_DATA", raising=False)
    cfg = compose(name)
    assert set(cfg.data) >= CONTRACT
    assert cfg.data.dataset == name
    module = instantiate(cfg.data)
    assert isinstance(module, MACEDataModule)
    assert module.r_max == 4.5 and module.seed == 7 and module.root is None


def test_root_defaults_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MACELAB_DATA", str(tmp_path))
    assert instantiate(compose("3bpa").data).root == tmp_path


def test_xyz_keys_are_the_mace_torch_names():
    keys = set(compose("xyz").data)
    assert {"train_file", "valid_file", "test_files", "valid_fraction", "energy_key",
            "forces_key", "stress_key", "e0s"} <= keys  # fmt: skip


def test_acac_config_sets_up_offline(monkeypatch, tmp_path):
    monkeypatch.delenv("MACELAB_DATA", raising=False)
    cfg = compose("acac", num_train=40, num_valid=10, cache_dir=str(tmp_path))
    module = instantiate(cfg.data)
    module.setup("fit")
    assert (len(module.train_dataset), len(module.val_dataset)) == (40, 10)
    assert module.statistics.r_max == 4.5


def test_rmd17_defaults_follow_the_mace_paper():
    data = compose("rmd17").data
    assert (data.num_train, data.num_valid, data.split, data.e0s) == (950, 50, 1, "least_squares")
