"""Fine-tuning from a model pretrained in the test: same predictions at the start, frozen
parameters fixed, E0 refit per element, unknown elements refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from macelab.data.statistics import DatasetStatistics
from macelab.errors import ConfigError
from macelab.precision import default_dtype
from macelab.train import run_training
from macelab.training import finetune
from macelab.training.checkpoint import load_model
from macelab.training.module import MACELightningModule
from tests.model.helpers import batch, read_molecule
from tests.training.conftest import TINY, compose_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def pretrained(compose_config, tmp_path):  # noqa: F811
    cfg = compose_config("train", [*TINY, "trainer.max_epochs=1"], output_dir=tmp_path / "pre")
    run_training(cfg)
    return tmp_path / "pre" / "checkpoints" / "best.ckpt"


def test_finetuning_starts_from_the_pretrained_model(pretrained, shared_data_root, tmp_path):
    model, hparams = load_model(pretrained)
    statistics = DatasetStatistics.from_dict(hparams["statistics"])
    shifted = dataclasses.replace(
        statistics, atomic_energies=[e + 1.0 for e in statistics.atomic_energies]
    )
    config = finetune.model_config(model, shifted, refit_e0s=True)
    assert config["atomic_energies"] == pytest.approx(shifted.atomic_energies)
    with default_dtype(torch.float64):  # as run_training builds it for precision=64
        module = MACELightningModule(model=config, statistics=shifted.to_dict())
    counts = finetune.initialise(module, model, ["embedding.*"])
    assert counts["frozen_parameters"] > 0
    inputs = batch([read_molecule(shared_data_root, "acac", 2)])
    before = model(inputs, compute_forces=True)
    after = module.model(inputs, compute_forces=True)
    # the same interaction energy and forces; total energy shifted by the refitted E0s
    torch.testing.assert_close(after["forces"], before["forces"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        after["interaction_energy"], before["interaction_energy"], rtol=1e-12, atol=1e-12
    )
    n_atoms = inputs.num_nodes
    torch.testing.assert_close(after["energy"], before["energy"] + n_atoms, rtol=0, atol=1e-8)


def test_finetuning_run_keeps_frozen_weights(pretrained, compose_config, tmp_path):  # noqa: F811
    overrides = [
        *TINY,
        "experiment=finetune",
        f"pretrained.ckpt_path={pretrained}",
        "pretrained.freeze=[embedding.*,interactions.0.*]",
        "trainer.max_epochs=1",
        "training.optimizer.lr=0.01",
    ]
    run_training(compose_config("train", overrides, output_dir=tmp_path / "tuned"))
    before, _ = load_model(pretrained)  # fine-tuning starts from the EMA weights
    after, _ = load_model(tmp_path / "tuned" / "checkpoints" / "last.ckpt", use_ema=False)
    old = dict(before.named_parameters())
    changed = 0
    for name, parameter in after.named_parameters():
        if name.startswith(("embedding.", "interactions.0.")):
            torch.testing.assert_close(parameter, old[name], rtol=0, atol=0, msg=name)
        else:
            changed += int(not torch.equal(parameter, old[name]))
    assert changed > 0


def test_unknown_elements_are_refused(pretrained):
    model, hparams = load_model(pretrained)
    statistics = DatasetStatistics.from_dict(hparams["statistics"])
    with_silicon = dataclasses.replace(
        statistics,
        atomic_numbers=[*statistics.atomic_numbers, 14],
        atomic_energies=[*statistics.atomic_energies, -100.0],
    )
    with pytest.raises(ConfigError, match="Si"):
        finetune.model_config(model, with_silicon, refit_e0s=True)
