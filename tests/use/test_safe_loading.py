"""No code from files (docs/security.md): a macelab checkpoint whose pickle also carries an
object that runs ``os.system`` when unpickled is refused, with a message naming the file and
the opt-in, by every loader and entry point, and the command never runs; mace-torch files
load only with ``trust_pickle=True``; loads pass ``weights_only=True`` explicitly, so
mace-torch's ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (set here for every test) does not turn
unpickling back on."""

from __future__ import annotations

import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest
import torch
from ase.build import molecule
from omegaconf import OmegaConf

from macelab._compat import lightning_loading
from macelab.analysis.predictions import predict_test_sets
from macelab.calculator import MACECalculator
from macelab.errors import ConfigError, UntrustedFileError
from macelab.evaluate import run_evaluation
from macelab.export import run_export
from macelab.interop import from_mace_torch, load_mace_torch_file
from macelab.md import run_md
from macelab.quantize import run_quantize
from macelab.train import run_training
from macelab.training import finetune
from macelab.training.checkpoint import artifact_from_checkpoint, load_model, read_checkpoint
from tests.cli import cli_env
from tests.training.conftest import TINY, compose_run_config

RUN = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "data.num_train=20"]


class Payload:
    """Unpickles as ``os.system("touch <marker>")``: what a malicious file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The run folder of a real one-epoch tiny training run."""
    run_dir = tmp_path_factory.mktemp("safe_loading") / "run"
    run_training(compose_run_config("train", RUN, run_dir))
    return run_dir


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "payload_ran"


@pytest.fixture
def malicious(trained, marker, tmp_path) -> Path:
    """The run's best checkpoint, plus a payload that writes ``marker`` when unpickled."""
    checkpoint = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["note"] = Payload(marker)
    path = tmp_path / "malicious.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture(autouse=True)
def mace_torch_environment(monkeypatch):
    """What importing mace-torch does to the process: default to full unpickling."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def _refused(call, path: Path, marker: Path) -> str:
    with pytest.raises(UntrustedFileError) as caught:
        call()
    message = str(caught.value)
    assert str(path) in message and "trust_pickle" in message
    assert not marker.exists(), "the payload ran"
    return message


def test_checkpoints_are_plain_data(trained):
    """Real checkpoints load weights-only, so refusing everything else costs nothing."""
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = read_checkpoint(trained / "checkpoints" / name)
        assert {"state_dict", "hyper_parameters", "macelab"} <= set(checkpoint)


def test_explicit_weights_only_wins_over_the_environment(malicious, marker):
    """The installed torch honours an explicit ``weights_only=True`` despite the variable,
    which macelab relies on; the crafted file is live (full unpickling runs the payload)."""
    with pytest.raises(pickle.UnpicklingError, match=r"(?i)weights only"):
        torch.load(malicious, weights_only=True)
    assert not marker.exists()
    load_model(malicious, trust_pickle=True)  # the opt-in: the payload runs
    assert marker.exists()


def test_python_loaders_refuse(malicious, trained, marker, tmp_path):
    message = _refused(lambda: read_checkpoint(malicious), malicious, marker)
    assert "posix.system" in message or "os.system" in message
    assert "may be malicious" in message
    _refused(lambda: load_model(malicious), malicious, marker)
    _refused(lambda: MACECalculator(str(malicious)), malicious, marker)
    good = trained / "checkpoints" / "best.ckpt"
    _refused(lambda: MACECalculator([str(good), str(malicious)]), malicious, marker)
    _refused(lambda: predict_test_sets(malicious, max_structures=1), malicious, marker)
    _refused(lambda: artifact_from_checkpoint(malicious, tmp_path / "art"), malicious, marker)
    # interop: a checkpoint passed off as a mace-torch file is refused before it is opened
    _refused(lambda: load_mace_torch_file(malicious), malicious, marker)
    _refused(lambda: from_mace_torch(malicious), malicious, marker)


def test_entry_points_refuse(malicious, marker, tmp_path):
    structure = tmp_path / "water.xyz"
    ase.io.write(structure, molecule("H2O"))
    ckpt = f"ckpt_path={malicious}"
    cases = [
        (run_evaluation, "evaluate", [ckpt, "accelerator=cpu"]),
        (run_md, "md", [ckpt, f"structure={structure}", "steps=2", "device=cpu"]),
        (run_export, "export", [ckpt, "format=pt2"]),
        (run_quantize, "quantize", [ckpt, "accelerator=cpu"]),
    ]
    for run, name, overrides in cases:
        cfg = compose_run_config(name, overrides, tmp_path / name)
        _refused(lambda run=run, cfg=cfg: run(cfg), malicious, marker)
    assert not (tmp_path / "quantize" / "int8.ckpt").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["ckpt_path={ckpt}"],  # resume
        ["experiment=finetune", "pretrained.ckpt_path={ckpt}"],
        ["experiment=finetune", "pretrained.mace_torch_model={ckpt}"],
    ],
    ids=["resume", "finetune-checkpoint", "finetune-mace-torch-file"],
)
def test_training_refuses(overrides, malicious, marker, tmp_path):
    overrides = [o.format(ckpt=malicious) for o in overrides]
    cfg = compose_run_config("train", [*RUN, *overrides], tmp_path / "run")
    _refused(lambda: run_training(cfg), malicious, marker)


def test_lightning_loads_weights_only(trained, monkeypatch, tmp_path):
    """Lightning's own loads (resume in ``trainer.fit``, best weights in ``trainer.test``,
    ``load_from_checkpoint`` in evaluate) get ``weights_only=True``: left unset, the
    environment would turn it off."""
    run_dir = tmp_path / "resumed"
    shutil.copytree(trained, run_dir)
    calls: list[object] = []
    original = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    overrides = [*RUN, "trainer.max_epochs=2", "ckpt_path=last"]
    run_training(compose_run_config("train", overrides, run_dir))
    assert len(calls) >= 2 and all(value is True for value in calls), calls
    calls.clear()
    best = run_dir / "checkpoints" / "best.ckpt"
    overrides = [f"ckpt_path={best}", "accelerator=cpu", "limit_test_batches=1", "plots=false"]
    run_evaluation(compose_run_config("evaluate", overrides, tmp_path / "evaluate"))
    assert len(calls) >= 2 and all(value is True for value in calls), calls


def test_older_lightning_loads_weights_only(malicious, marker):
    """Lightning < 2.6 takes no ``weights_only``: torch's switches decide inside the block."""

    def old_fit(model, ckpt_path=None):  # as such a Lightning loads: weights_only unset
        return torch.load(ckpt_path)

    with lightning_loading(old_fit, trust_pickle=False) as kwargs:
        assert kwargs == {}
        with pytest.raises(pickle.UnpicklingError):
            old_fit(None, ckpt_path=malicious)
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # restored afterwards
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_cli_refusal_is_one_paragraph(malicious, marker, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "macelab.evaluate",
            f"ckpt_path={malicious}",
            f"hydra.run.dir={tmp_path / 'evaluate'}",
        ],
        capture_output=True,
        text=True,
        env=cli_env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"),
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    # (before it, e3nn's import warns about the variable: torch's warning, not ours)
    message = result.stderr[result.stderr.index("error: ") :].replace("\n", " ")
    assert "malicious.ckpt holds Python objects" in message and "trust_pickle=true" in message
    assert not marker.exists()


def test_mace_torch_files_need_the_opt_in(tmp_path):
    """A legitimate mace-torch file is refused without ``trust_pickle`` and converts with it
    (through the interop functions and fine-tuning's ``pretrained.trust_pickle``)."""
    pytest.importorskip("mace.modules")
    from macelab.interop import to_mace_torch
    from tests.model.helpers import batch, small_model

    ours = small_model(channels=4, max_L=1, max_ell=2, correlation=2)
    path = tmp_path / "foundation.model"
    torch.save(to_mace_torch(ours), path)

    message = _refused(lambda: load_mace_torch_file(path), path, tmp_path / "none")
    assert "mace-torch model file" in message and "pretrained.trust_pickle=true" in message
    settings = {"mace_torch_model": str(path)}
    with pytest.raises(UntrustedFileError):
        finetune.load_pretrained(OmegaConf.create(settings))
    with pytest.raises(ConfigError, match="does not exist"):
        finetune.load_pretrained(OmegaConf.create({"mace_torch_model": str(tmp_path / "x")}))

    converted = [
        from_mace_torch(load_mace_torch_file(path, trust_pickle=True)),
        from_mace_torch(path, trust_pickle=True),
        finetune.load_pretrained(OmegaConf.create({**settings, "trust_pickle": True})),
    ]
    water = molecule("H2O")
    inputs = batch([water])
    expected = ours(inputs)["energy"]
    for model in converted:
        torch.testing.assert_close(model(inputs)["energy"], expected, rtol=1e-10, atol=1e-10)
