"""Non-finite never passes, and the rough edges of issue 30 give one-paragraph errors.

A tiny model is trained once on a few water frames written into a temporary folder; the
tests then evaluate it, resume from it and run MD with it on broken inputs. Each broken
input must end in a :class:`~macelab.errors.MacelabError` that names the file, the record
and what to do (the command line prints it as one paragraph and exits with status 2).
Tests that need the trained model or a subprocess are marked slow (about 40 s together).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import open_dict
from torch_geometric.data import Batch

from macelab.data.graph import AtomicGraph
from macelab.errors import AtomsTooCloseError, ConfigError, DataError
from macelab.evaluate import run_evaluation
from macelab.md import run_md
from macelab.train import run_training
from macelab.training.module import (
    NonFiniteDataError,
    NonFiniteLossError,
    NonFinitePredictionError,
)
from macelab.training.scaling import available_cores, warn_if_oversubscribed
from tests.cli import cli_env
from tests.training.conftest import compose_run_config
from tests.training.helpers import tiny_module

HEADER = 'Properties=species:S:1:pos:R:3:forces:R:3 energy={energy:.6f} pbc="F F F"'
ISOLATED = (
    '1\nProperties=species:S:1:pos:R:3:forces:R:3 energy={e} config_type=IsolatedAtom pbc="F F F"'
    "\n{s} 0.0 0.0 0.0 0.0 0.0 0.0\n"
)
WATER = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


def water_frames(count: int, seed: int, coincident: tuple[int, ...] = ()) -> str:
    """``count`` rattled water frames with random labels; frames in ``coincident`` have their
    second hydrogen on top of the first."""
    rng = np.random.default_rng(seed)
    text = ""
    for k in range(count):
        positions = WATER + rng.normal(scale=0.05, size=(3, 3))
        if k in coincident:
            positions[2] = positions[1]
        forces = rng.normal(scale=0.5, size=(3, 3))
        rows = [
            f"{s} " + " ".join(f"{v:.8f}" for v in (*p, *f))
            for s, p, f in zip("OHH", positions, forces, strict=True)
        ]
        energy = -2068.0 + rng.normal(scale=0.1)
        text += f"3\n{HEADER.format(energy=energy)}\n" + "\n".join(rows) + "\n"
    return text


def isolated_atoms() -> str:
    return ISOLATED.format(e=-13.6, s="H") + ISOLATED.format(e=-2040.0, s="O")


FAST = [
    "model/size=tiny",
    "model.correlation=1",
    "model.num_interactions=1",
    "model.radial_mlp=[8]",
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "precision='64'",
    "benchmark=null",
    "data.num_valid=2",
]


@pytest.fixture(scope="module")
def water(tmp_path_factory) -> Path:
    """A folder with train.xyz (10 water frames + isolated atoms) and test.xyz (4 frames)."""
    folder = tmp_path_factory.mktemp("water")
    (folder / "train.xyz").write_text(water_frames(10, seed=0) + isolated_atoms())
    (folder / "test.xyz").write_text(water_frames(4, seed=1))
    return folder


@pytest.fixture(scope="module")
def checkpoint(water, tmp_path_factory) -> Path:
    """A tiny model trained for one epoch on the water frames."""
    run = tmp_path_factory.mktemp("trained")
    (run / "train.xyz").write_text((water / "train.xyz").read_text())  # for the evaluations
    overrides = [
        "data=xyz",
        f"data.train_file={water / 'train.xyz'}",
        f"data.test_files={{md: {water / 'test.xyz'}}}",
        f"data.cache_dir={run / 'cache'}",
        *FAST,
    ]
    try:
        run_training(compose_run_config("train", overrides, run))
    finally:
        GlobalHydra.instance().clear()
    return run / "checkpoints" / "best.ckpt"


def _evaluate(ckpt: Path, test_file: Path, tmp_path: Path, *extra: str) -> list[str]:
    """Overrides of `python -m macelab.evaluate` for ``test_file`` as the test set ``md``."""
    overrides = [
        f"ckpt_path={ckpt}",
        "data=xyz",
        f"data.train_file={ckpt.parents[1] / 'train.xyz'}",
        f"data.test_files={{md: {test_file}}}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "plots=false",
        *extra,
    ]
    return overrides


# -- item 3: non-finite never passes --------------------------------------------------------
@pytest.mark.slow
def test_evaluation_of_a_test_set_with_coincident_atoms_names_file_record_and_atoms(
    checkpoint, water, tmp_path
):
    bad = tmp_path / "test.xyz"
    bad.write_text(water_frames(3, seed=2, coincident=(1,)))
    cfg = compose_run_config("evaluate", _evaluate(checkpoint, bad, tmp_path), tmp_path / "eval")
    with pytest.raises(AtomsTooCloseError) as info:
        run_evaluation(cfg)
    message = str(info.value)
    assert info.value.file.endswith("test.xyz") and info.value.record == 1
    assert "atoms 1 and 2 (H and H) are at the same position" in message
    assert not (tmp_path / "eval" / "results.json").exists()


@pytest.mark.slow
def test_evaluation_with_non_finite_predictions_exits_non_zero_naming_set_and_record(
    checkpoint, water, tmp_path
):
    """With the distance check off, coincident atoms reach the model, which predicts NaN:
    the evaluation must fail naming the test set and the record, not write NaN metrics."""
    bad = tmp_path / "test.xyz"
    bad.write_text(water_frames(3, seed=2, coincident=(1,)))
    overrides = _evaluate(checkpoint, bad, tmp_path, "data.min_distance=0")
    cfg = compose_run_config("evaluate", overrides, tmp_path / "eval")
    with pytest.raises(NonFinitePredictionError, match=r"test set 'md' .*first record 1"):
        run_evaluation(cfg)
    assert not (tmp_path / "eval" / "results.json").exists()

    result = subprocess.run(
        [sys.executable, "-m", "macelab.evaluate", *overrides, f"hydra.run.dir={tmp_path / 'c'}"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error = result.stderr[result.stderr.index("error:") :]
    assert "test set 'md'" in error and "first record 1" in error
    assert not (tmp_path / "c" / "results.json").exists()


def _water_batch(positions: np.ndarray, index: int = 7) -> Batch:
    f64 = torch.float64
    edge_index = torch.tensor([[0, 1, 0, 2, 1, 2], [1, 0, 2, 0, 2, 1]])
    graph = AtomicGraph(
        num_nodes=3,
        positions=torch.as_tensor(positions, dtype=f64),
        atomic_numbers=torch.tensor([8, 1, 1]),
        edge_index=edge_index,
        unit_shifts=torch.zeros(6, 3, dtype=f64),
        cell=torch.zeros(1, 3, 3, dtype=f64),
        pbc=torch.zeros(1, 3, dtype=torch.bool),
        energy=torch.tensor([-2068.0], dtype=f64),
        forces=torch.zeros(3, 3, dtype=f64),
        stress=torch.zeros(1, 3, 3, dtype=f64),
        has_energy=torch.tensor([True]),
        has_forces=torch.tensor([True]),
        has_stress=torch.tensor([False]),
        weight=torch.ones(1, dtype=f64),
        index=torch.tensor([index]),
    )
    sound = AtomicGraph(**{k: v for k, v in graph.items()})
    sound.positions = torch.as_tensor(WATER, dtype=f64)
    sound.index = torch.tensor([3])
    return Batch.from_data_list([sound, graph])


def test_nan_loss_from_coincident_atoms_names_the_frame_not_the_learning_rate():
    positions = WATER.copy()
    positions[2] = positions[1]
    module = tiny_module([1, 8], [-13.6, -2040.0])
    with pytest.raises(NonFiniteDataError) as info:
        module.training_step(_water_batch(positions), 0)
    message = str(info.value)
    assert info.value.record == 7 and info.value.field == "positions"
    assert "atoms 1 and 2 are at the same position" in message
    assert "Lower the learning rate" not in message and "global step 0" in message
    assert isinstance(info.value, DataError)


def test_nan_loss_with_sound_data_still_points_at_the_optimiser():
    module = tiny_module([1, 8], [-13.6, -2040.0])
    with torch.no_grad():
        next(module.model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="Lower the learning rate") as info:
        module.training_step(_water_batch(WATER), 0)
    assert not isinstance(info.value, NonFiniteDataError)


@pytest.mark.slow
def test_md_refuses_a_structure_with_coincident_atoms(checkpoint, tmp_path):
    structure = tmp_path / "start.xyz"
    structure.write_text(water_frames(2, seed=3, coincident=(1,)))
    overrides = [f"ckpt_path={checkpoint}", f"structure={structure}", "frame=1", "steps=5"]
    cfg = compose_run_config("md", overrides, tmp_path / "md")
    with pytest.raises(AtomsTooCloseError) as info:
        run_md(cfg)
    assert info.value.file == str(structure) and info.value.record == 1
    assert "atoms 1 and 2 (H and H)" in str(info.value)


@pytest.mark.slow
def test_md_stops_at_the_step_that_brings_atoms_too_close(checkpoint, tmp_path):
    """A threshold just under the O-H bond and a hot start: the first step that shortens a
    bond below it stops the run, naming the step."""
    structure = tmp_path / "start.xyz"
    structure.write_text(water_frames(1, seed=4))
    overrides = [
        f"ckpt_path={checkpoint}",
        f"structure={structure}",
        "steps=200",
        "temperature_K=2000",
        "timestep_fs=1.0",
        "min_distance=0.85",
    ]
    cfg = compose_run_config("md", overrides, tmp_path / "md")
    with pytest.raises(AtomsTooCloseError, match=r"start\.xyz, frame 0, MD step \d+") as info:
        run_md(cfg)
    assert "timestep_fs" in str(info.value)


# -- item 4: the remaining rough edges ------------------------------------------------------
@pytest.mark.slow
def test_resume_on_data_with_an_element_the_checkpoint_lacks(checkpoint, water, tmp_path):
    train = tmp_path / "train.xyz"
    carbon = water_frames(1, seed=5).replace("\nO ", "\nC ", 1)
    train.write_text(water_frames(6, seed=6) + carbon + isolated_atoms())
    train.write_text(train.read_text() + ISOLATED.format(e=-1030.0, s="C"))
    overrides = [
        "data=xyz",
        f"data.train_file={train}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"ckpt_path={checkpoint}",
        *FAST,
    ]
    with pytest.raises(DataError) as info:
        run_training(compose_run_config("train", overrides, tmp_path / "run"))
    message = str(info.value)
    assert "holds C, which the model of checkpoint" in message and "H, O" in message
    assert info.value.file.endswith("train.xyz") and "\n" not in message


def test_wrongly_typed_value_names_the_key_and_the_value(tmp_path):
    cfg = compose_run_config("train", ["model.channels=abc"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"model\.channels='abc' .*takes an integer"):
        run_training(cfg)
    cfg = compose_run_config("train", ["data.batch_size=five"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"data\.batch_size='five'"):
        run_training(cfg)


@pytest.mark.slow
def test_wrongly_typed_value_on_the_command_line_is_one_paragraph(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "macelab.train", "model.channels=abc", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=cli_env(MACELAB_CACHE=str(tmp_path / "cache")),
        timeout=600,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: model.channels='abc' has the wrong type" in result.stderr


def test_readme_xyz_command_works_as_printed(water, tmp_path, monkeypatch):
    """README: `python -m macelab.train data=xyz data.train_file=train.xyz
    data.test_files='{md: test.xyz}' data.energy_key=energy data.forces_key=forces`."""
    monkeypatch.chdir(water)
    overrides = [
        "data=xyz",
        "data.train_file=train.xyz",
        "data.test_files={md: test.xyz}",  # the shell has removed the quotes
        "data.energy_key=energy",
        "data.forces_key=forces",
    ]
    cfg = compose_run_config("train", overrides, tmp_path / "run")
    assert dict(cfg.data.test_files) == {"md": "test.xyz"}
    assert cfg.data.num_train is None  # the quick start's 200 + 50 are AcAc's, not these
    with open_dict(cfg):
        cfg.data.cache_dir = str(tmp_path / "cache")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert datamodule.test_set_names == ["md"]
    assert len(datamodule.train_dataset) + len(datamodule.val_dataset) == 10


def test_default_run_keeps_the_quick_start_sizes(tmp_path):
    cfg = compose_run_config("train", [], tmp_path / "run")
    assert (cfg.data.dataset, cfg.data.num_train, cfg.data.num_valid) == ("acac", 200, 50)


def test_ddp_with_more_cpu_processes_than_cores_warns(tmp_path, caplog):
    cores = available_cores()
    cfg = compose_run_config(
        "train",
        ["trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={cores + 1}"],
        tmp_path / "run",
    )
    with caplog.at_level(logging.WARNING, logger="macelab.training.scaling"):
        message = warn_if_oversubscribed(instantiate(cfg.trainer))
    assert message is not None and f"starts {cores + 1} CPU processes" in message
    assert f"trainer.devices={cores}" in message and message in caplog.text
    one = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1"]
    cfg = compose_run_config("train", one, tmp_path / "one")
    assert warn_if_oversubscribed(instantiate(cfg.trainer)) is None


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


@pytest.mark.slow
def test_results_of_a_sound_evaluation_are_written(checkpoint, water, tmp_path):
    """The checks do not get in the way of a sound test set."""
    cfg = compose_run_config(
        "evaluate", _evaluate(checkpoint, water / "test.xyz", tmp_path), tmp_path
    )
    results = run_evaluation(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["md"]["num_structures"] == 4 == results["md"]["num_structures"]
