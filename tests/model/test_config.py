"""conf/model: the paper's architecture, the size group, overrides, and build_model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from macelab.data.statistics import DatasetStatistics
from macelab.errors import ConfigError
from macelab.model import MACE, build_model, count_parameters

from .helpers import TINY_CONFIG, compose_model_config, e3nn_without_script

SIZES = {
    "tiny": (16, 1),
    "small": (128, 0),
    "medium": (128, 1),
    "large": (128, 2),
    "paper": (256, 2),
}


def _compose(tmp_path: Path, overrides: list[str]) -> DictConfig:
    return DictConfig({"model": compose_model_config(tmp_path, overrides)})


def _statistics(r_max: float = 5.0) -> DatasetStatistics:
    return DatasetStatistics(
        atomic_numbers=[1, 6, 8],
        atomic_energies=[-13.6, -1029.0, -2041.0],
        avg_num_neighbors=9.5,
        mean_interaction_energy_per_atom=-0.25,
        std_interaction_energy_per_atom=0.05,
        rms_forces=1.7,
        num_configurations=10,
        r_max=r_max,
    )


def test_default_is_the_paper_model(tmp_path):
    model = _compose(tmp_path, [])["model"]
    assert (model.channels, model.max_L) == SIZES["paper"]
    assert model.max_ell == 3 and model.correlation == 3 and model.num_interactions == 2
    assert model.r_max == 5.0 and model.num_bessel == 8 and model.num_polynomial_cutoff == 5
    assert list(model.radial_mlp) == [64, 64, 64] and model.readout_mlp == 16
    assert model.gate == "silu" and model.interaction_first == "residual"
    assert model.reduced_cg is False
    for key in ("atomic_numbers", "atomic_energies", "avg_num_neighbors", "scale", "shift"):
        assert model[key] is None


@pytest.mark.parametrize("size", sorted(SIZES))
def test_sizes_and_overrides(tmp_path, size):
    model = _compose(tmp_path, [f"model/size={size}", "model.correlation=2"])["model"]
    assert (model.channels, model.max_L) == SIZES[size]
    assert model.correlation == 2 and model.max_ell == 3
    assert "size" not in model  # the size group merges into the model node


def test_build_from_config_and_statistics(tmp_path):
    cfg = _compose(tmp_path, ["model/size=tiny", "model.correlation=[3,2]", "model.max_ell=2"])
    model = build_model(cfg.model, _statistics())
    assert isinstance(model, MACE)
    h = model.hyperparameters
    assert h["atomic_numbers"] == [1, 6, 8] and h["atomic_energies"] == [-13.6, -1029.0, -2041.0]
    assert h["avg_num_neighbors"] == 9.5 and h["scale"] == 1.7 and h["shift"] == -0.25
    assert h["correlation"] == [3, 2] and h["channels"] == 16 and h["max_L"] == 1
    assert float(model.scale_shift.scale) == 1.7
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    given = {
        "atomic_numbers": [1, 8],
        "atomic_energies": [-1.0, -2.0],
        "avg_num_neighbors": 3.0,
        "scale": 2.0,
        "shift": 0.0,
    }
    explicit = build_model({**dict(cfg.model), **given}, None)  # nothing from statistics
    assert {k: explicit.hyperparameters[k] for k in given} == given


def test_build_errors_say_what_to_do(tmp_path):
    cfg = dict(_compose(tmp_path, ["model/size=tiny"]).model)
    with pytest.raises(ConfigError, match="unknown model config keys \\['chanels'\\]"):
        build_model({**cfg, "chanels": 8}, _statistics())
    with pytest.raises(ConfigError, match="no dataset statistics"):
        build_model(cfg, None)
    with pytest.raises(ConfigError, match=r"r_max=4\.0"):
        build_model(cfg, _statistics(r_max=4.0))
    with pytest.raises(ConfigError, match="correlation orders must be 1-4"):
        build_model({**cfg, "correlation": 5}, _statistics())
    with pytest.raises(ConfigError, match="interaction_first"):
        build_model({**cfg, "interaction_first": "other"}, _statistics())


def test_zero_force_rms_falls_back_to_unit_scale(tmp_path):
    cfg = _compose(tmp_path, ["model/size=tiny", "model.max_ell=1", "model.correlation=1"])
    statistics = _statistics()
    statistics.rms_forces = 0.0
    with e3nn_without_script():
        assert build_model(cfg.model, statistics).hyperparameters["scale"] == 1.0


def test_resume_check_treats_new_keys_as_their_defaults(tmp_path):
    """A checkpoint written before a hyperparameter existed has that key's default: resuming
    it with today's config (which spells the key out) is allowed, a real change is not."""
    from macelab.training.checkpoint import check_compatible

    model_cfg = {**TINY_CONFIG, "pair_repulsion": False, "distance_transform": "none"}
    old = {k: v for k, v in model_cfg.items() if k not in ("pair_repulsion", "distance_transform")}
    path = tmp_path / "old.ckpt"
    torch.save(
        {"hyper_parameters": {"model": old, "statistics": {}}, "macelab": {}, "state_dict": {}},
        path,
    )
    check_compatible(path, model_cfg)
    with pytest.raises(ConfigError, match="pair_repulsion: False -> True"):
        check_compatible(path, {**model_cfg, "pair_repulsion": True})


def test_mp_blocks_rebuild_from_config_and_restrict(tmp_path):
    """ZBL repulsion and a distance transform are hyperparameters: a model folder rebuilds
    them, and restricting the element table keeps the energies (their constants are indexed
    by atomic number, not by the table)."""
    from ase.build import molecule

    from macelab.data.statistics import DatasetStatistics
    from macelab.training.artifact import load_artifact, save_artifact
    from macelab.training.finetune import restrict_elements

    from .helpers import batch, small_model

    model = small_model(seed=1, channels=4, max_L=1, max_ell=2, correlation=2, radial_mlp=[8],
                        pair_repulsion=True, distance_transform="soft")  # fmt: skip
    atoms = molecule("CH3CH2OH")
    atoms.positions *= 0.8  # pairs inside the ZBL radii
    graphs = batch([atoms])
    expected = model(graphs)["energy"]
    h = model.hyperparameters
    statistics = DatasetStatistics(
        h["atomic_numbers"], h["atomic_energies"], 8.0, 0.0, 1.0, 1.0, 1, 5.0
    )
    folder = save_artifact(model, dict(h), statistics.to_dict(), tmp_path / "model")
    with e3nn_without_script():
        loaded, _ = load_artifact(folder)
    assert loaded.pair_repulsion is not None and loaded.radial.transform is not None
    torch.testing.assert_close(loaded(graphs)["energy"], expected, rtol=0, atol=1e-10)
    restricted = restrict_elements(model, [1, 6, 8])
    torch.testing.assert_close(restricted(graphs)["energy"], expected, rtol=0, atol=1e-10)
