"""Model folders (model.yaml + model.safetensors): written from a trained checkpoint, loaded
by path everywhere a checkpoint is, without unpickling anything; and the committed trained
models still predict what they predicted when they were recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from macelab.errors import MacelabError
from macelab.training.artifact import is_artifact, load_artifact
from macelab.training.checkpoint import artifact_from_checkpoint, load_model
from tests.training.conftest import TINY, compose_config, compose_run_config  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
MODELS = sorted(p.parent for p in (REPO / "models").glob("*/model.yaml"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The last checkpoint of a tiny real training run."""
    from hydra.core.global_hydra import GlobalHydra

    from macelab.train import run_training

    run = tmp_path_factory.mktemp("run")
    run_training(compose_run_config("train", [*TINY, "trainer.max_epochs=1"], run))
    GlobalHydra.instance().clear()
    return run / "checkpoints" / "last.ckpt"


def test_artifact_round_trip_equals_checkpoint(trained, tmp_path):
    """The folder holds the checkpoint's EMA weights and plain config; loading it gives the
    same energies and forces as the checkpoint, in the same dtype."""
    from ase.build import molecule

    from tests.model.helpers import batch

    folder = artifact_from_checkpoint(trained, tmp_path / "model", {"name": "tiny"})
    assert is_artifact(folder) and is_artifact(folder / "model.yaml")
    config = yaml.safe_load((folder / "model.yaml").read_text())
    assert config["run"]["data"]["dataset"] == "acac" and config["metadata"]["name"] == "tiny"
    assert config["model"].get("backend") is None  # how to compute is chosen where it runs
    from_checkpoint, _ = load_model(trained)
    from_folder, parsed = load_model(folder)
    assert parsed["statistics"]["atomic_numbers"] == [1, 6, 8]
    inputs = batch([molecule("CH3COCH3"), molecule("CH3CH2OH")])
    inputs.positions = inputs.positions.to(next(from_checkpoint.parameters()).dtype)
    expected = from_checkpoint(inputs, compute_forces=True)
    got = from_folder(inputs, compute_forces=True)
    assert torch.equal(got["energy"], expected["energy"])
    assert torch.equal(got["forces"], expected["forces"])


def test_artifact_errors_name_the_file(trained, tmp_path):
    folder = artifact_from_checkpoint(trained, tmp_path / "model")
    weights = load_file(str(folder / "model.safetensors"))
    weights.pop(next(iter(weights)))
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(MacelabError, match="do not fit the model"):
        load_artifact(folder)
    (folder / "model.yaml").write_text("format: something-else\n")
    with pytest.raises(MacelabError, match="not a macelab model description"):
        load_artifact(folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    (folder / "model.yaml").write_text(yaml.safe_dump({"format": "macelab-model"}))
    with pytest.raises(MacelabError, match="could not be read as safetensors"):
        load_artifact(folder)


def test_calculator_loads_a_model_folder(trained, tmp_path):
    from ase.build import molecule

    from macelab.calculator import MACECalculator

    folder = artifact_from_checkpoint(trained, tmp_path / "model")
    atoms = molecule("CH3CH2OH")
    atoms.calc = MACECalculator(str(folder), device="cpu", precision="64")
    energy = atoms.get_potential_energy()
    atoms.calc = MACECalculator(str(trained), device="cpu", precision="64")
    assert atoms.get_potential_energy() == pytest.approx(energy, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("folder", MODELS, ids=[m.name for m in MODELS])
def test_committed_model_reproduces_its_recorded_errors(folder, compose_config, tmp_path):  # noqa: F811
    """Each committed model, evaluated on CPU by ``python -m macelab.evaluate``'s code, gives
    the errors recorded in its model.yaml (``checks``) to the recorded tolerance: a change
    to the model code that changes its predictions cannot pass silently."""
    from macelab.evaluate import run_evaluation

    config = yaml.safe_load((folder / "model.yaml").read_text())
    checks = config.get("checks") or []
    assert checks, f"{folder}/model.yaml records no regression check"
    for check in checks:
        run = tmp_path / check["test_set"]
        cfg = compose_config(
            "evaluate",
            [
                f"ckpt_path={folder}",
                "accelerator=cpu",
                "plots=false",
                f"limit_test_batches={check['batches']}",
            ],
            output_dir=run,
        )
        results = run_evaluation(cfg)
        metrics = results[check["test_set"]]
        assert metrics["num_structures"] == check["structures"]
        assert metrics[check["metric"]] == pytest.approx(check["value"], rel=check["rtol"])
        written = json.loads((run / "results.json").read_text())
        assert written[check["test_set"]][check["metric"]] == metrics[check["metric"]]
