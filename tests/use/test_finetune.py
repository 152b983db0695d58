"""Fine-tuning from a model pretrained in the test: same predictions at the start, frozen
parameters fixed, E0 refit per element, unknown elements refused; the element table
restricted to a subset (``pretrained.elements``) with unchanged predictions."""

from __future__ import annotations

import dataclasses
import types

import ase.io
import pytest
import torch

from macelab.data.statistics import DatasetStatistics
from macelab.errors import ConfigError
from macelab.model import count_parameters
from macelab.precision import default_dtype
from macelab.train import run_training
from macelab.training import finetune
from macelab.training.checkpoint import load_model
from macelab.training.module import MACELightningModule
from tests.model.helpers import batch, read_molecule, small_model
from tests.training.conftest import TINY, compose_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def pretrained(compose_config, tmp_path):  # noqa: F811
    cfg = compose_config("train", [*TINY, "trainer.max_epochs=1"], output_dir=tmp_path / "pre")
    run_training(cfg)
    return tmp_path / "pre" / "checkpoints" / "best.ckpt"


def test_finetuning_starts_from_the_pretrained_model(pretrained, tmp_path):
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
    inputs = batch([read_molecule("acac", 2)])
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


# ----------------------------------------------------------- element subset (pretrained.elements)


@pytest.mark.parametrize(
    ("settings", "subset"),
    [
        ({}, [1, 6, 8]),
        ({}, [8, 1, 6]),  # any order: the table follows the list
        ({"embedding": "low_rank", "embedding_rank": 3}, [1, 6, 8]),
        ({"interaction_first": "plain", "correlation": [3, 2]}, [1, 6, 8, 14]),
    ],
    ids=["full", "reordered", "low_rank", "plain_first_layer"],
)
def test_restricted_model_predicts_the_same(settings, subset):
    """Slicing every per-element table keeps energies and forces of structures whose
    elements are in the subset (float64, to rounding) and drops parameters."""
    model = small_model(seed=1, channels=4, **settings)
    with torch.no_grad():  # perturb the E0s and scale so each reaches the output
        model.atomic_energies.atomic_energies.add_(torch.arange(5.0, dtype=torch.float64))
    restricted = finetune.restrict_elements(model, subset)
    assert restricted.atomic_numbers == subset
    assert count_parameters(restricted) < count_parameters(model)
    inputs = batch([read_molecule("acac", i) for i in (0, 7)])
    before = model(inputs, compute_forces=True)
    after = restricted(inputs, compute_forces=True)
    torch.testing.assert_close(after["energy"], before["energy"], rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(after["forces"], before["forces"], rtol=1e-12, atol=1e-12)


def test_element_subset_resolution():
    model = small_model(seed=0, channels=4)  # elements H C N O Si
    statistics = types.SimpleNamespace(atomic_numbers=[1, 6, 8])  # the new data's elements
    assert finetune.element_subset("data", model, statistics) == [1, 6, 8]
    assert finetune.element_subset(["O", "H", "C", "N"], model, statistics) == [1, 6, 7, 8]
    with pytest.raises(ConfigError, match="misses O"):
        finetune.element_subset(["H", "C"], model, statistics)
    with pytest.raises(ConfigError, match="does not know"):
        finetune.element_subset(["H", "C", "O", "Fe"], model, statistics)
    with pytest.raises(ConfigError, match="not an element"):
        finetune.element_subset(["H", "C", "O", "Xx"], model, statistics)


@pytest.fixture
def pretrained_3bpa(compose_config, tmp_path):  # noqa: F811
    """A model pretrained on 3BPA frames (H C N O; read_molecule's stand-ins without the
    benchmark data), to fine-tune on AcAc (H C O)."""
    frames = tmp_path / "3bpa.xyz"
    ase.io.write(frames, [read_molecule("3bpa", i) for i in range(30)])
    overrides = [
        *TINY,
        "data=xyz",
        f"data.train_file={frames}",
        "data.e0s=least_squares",
        "trainer.max_epochs=1",
        "data.num_train=20",
        "data.num_valid=5",
    ]
    cfg = compose_config("train", overrides, output_dir=tmp_path / "pre3bpa")
    run_training(cfg)
    return tmp_path / "pre3bpa" / "checkpoints" / "best.ckpt"


def test_finetuning_run_with_data_elements(pretrained_3bpa, compose_config, tmp_path):  # noqa: F811
    overrides = [
        *TINY,
        "experiment=finetune",
        f"pretrained.ckpt_path={pretrained_3bpa}",
        "pretrained.elements=data",
        "trainer.max_epochs=1",
    ]
    results = run_training(compose_config("train", overrides, output_dir=tmp_path / "tuned"))
    before, _ = load_model(pretrained_3bpa)
    after, _ = load_model(tmp_path / "tuned" / "checkpoints" / "last.ckpt", use_ema=False)
    assert before.atomic_numbers == [1, 6, 7, 8] and after.atomic_numbers == [1, 6, 8]
    assert count_parameters(after) < count_parameters(before)
    start = dict(finetune.restrict_elements(before, [1, 6, 8]).named_parameters())
    changed = [n for n, p in after.named_parameters() if not torch.equal(p, start[n])]
    assert changed  # trained from the sliced weights (same shapes, new values)
    energy_errors = torch.tensor([m["energy_mae_meV"] for m in results.values()])
    assert torch.isfinite(energy_errors).all()  # tested on every AcAc test set
