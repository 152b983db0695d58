"""``runtime.backend`` (old name ``model.backend``, still read): the contraction backend
chosen in the config, kept in checkpoints, changeable on load and on resume, refused with a
clear error where it cannot run."""

from __future__ import annotations

import importlib.util
import logging
import math

import pandas as pd
import pytest
import torch
from ase.build import molecule

from macelab.errors import ConfigError
from macelab.kernels import get_backend
from macelab.model.symmetric_contraction import SymmetricContraction
from macelab.runtime import build_for_run as build_model
from tests.training.conftest import TINY, compose_config  # noqa: F401 (fixture)

from ..model.helpers import TINY_CONFIG, batch, default_dtype

CONFIG = TINY_CONFIG


def _backends(model: torch.nn.Module) -> set[str]:
    return {get_backend(m) for m in model.modules() if isinstance(m, SymmetricContraction)}


def test_config_backend_sets_every_contraction():
    torch.manual_seed(0)
    reference = build_model(CONFIG)
    torch.manual_seed(0)
    sparse = build_model({**CONFIG, "backend": "sparse_torch"})
    assert _backends(reference) == {"e3nn"}
    assert _backends(sparse) == {"sparse_torch"}
    assert reference.state_dict().keys() == sparse.state_dict().keys()
    graphs = batch([molecule("CH3CH2OH")])
    expected = reference(graphs, compute_forces=True)
    got = sparse(graphs, compute_forces=True)
    torch.testing.assert_close(got["energy"], expected["energy"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["forces"], expected["forces"], rtol=1e-4, atol=1e-5)


def test_explicit_backend_overrides_the_config():
    model = build_model({**CONFIG, "backend": "sparse_torch"}, backend="e3nn")
    assert _backends(model) == {"e3nn"}


def test_unknown_or_unavailable_backend_is_a_config_error(monkeypatch):
    with pytest.raises(ConfigError, match=r"runtime\.backend=cuda.*unknown contraction backend"):
        build_model({**CONFIG, "backend": "cuda"})
    find_spec = importlib.util.find_spec

    def without_cueq(name: str, *args):
        return None if name.startswith("cuequivariance") else find_spec(name, *args)

    with monkeypatch.context() as patched:
        patched.setattr(importlib.util, "find_spec", without_cueq)
        with pytest.raises(ConfigError, match=r"runtime\.backend=cueq.*macelab\[cueq\]"):
            build_model({**CONFIG, "backend": "cueq"})
    if torch.cuda.is_available():
        return
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match=r"runtime\.backend=triton.*runtime\.backend=e3nn"):
        build_model({**CONFIG, "backend": "triton"})


@pytest.mark.slow
def test_checkpoint_keeps_the_backend_and_loads_with_any(
    compose_config,  # noqa: F811
    tmp_path,
    caplog,
    monkeypatch,
):
    """A tiny real run with the sparse_torch backend: finite losses, the checkpoint loads
    with its backend, with e3nn on request (same energies), and a Triton-trained
    checkpoint falls back to e3nn, logged, where Triton cannot run (as does one trained
    with the fused convolution)."""
    from macelab.train import run_training
    from macelab.training.checkpoint import check_compatible, load_model, read_checkpoint

    run = tmp_path / "run"
    overrides = [*TINY, "model.backend=sparse_torch", "trainer.max_epochs=1"]
    overrides += ["trainer.log_every_n_steps=1"]
    assert run_training(compose_config("train", overrides, output_dir=run))
    losses = pd.concat(pd.read_csv(p) for p in run.rglob("metrics.csv"))["train/loss"].dropna()
    assert len(losses) > 0 and all(math.isfinite(v) for v in losses)
    ckpt = next(run.rglob("last.ckpt"))
    model, hparams = load_model(ckpt)
    assert hparams["runtime"]["backend"] == "sparse_torch"
    assert _backends(model) == {"sparse_torch"}
    plain, _ = load_model(ckpt, backend="e3nn")
    assert _backends(plain) == {"e3nn"}
    with default_dtype(torch.float64):
        graphs = batch([molecule("CH3COCH3")])
    torch.testing.assert_close(
        model(graphs, compute_forces=True)["forces"],
        plain(graphs, compute_forces=True)["forces"],
        rtol=1e-10,
        atol=1e-10,
    )
    # resuming with another backend is allowed: it does not change the function
    check_compatible(ckpt, {**hparams["model"], "backend": "e3nn"})
    # a checkpoint trained with triton, loaded where triton cannot run
    if torch.cuda.is_available():
        return
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    checkpoint = read_checkpoint(ckpt)
    del checkpoint["hyper_parameters"]["runtime"]  # as written before conf/runtime: old keys
    checkpoint["hyper_parameters"]["model"]["backend"] = "triton"
    triton_ckpt = tmp_path / "triton.ckpt"
    torch.save(checkpoint, triton_ckpt)
    with caplog.at_level(logging.WARNING, logger="macelab.training.checkpoint"):
        loaded, _ = load_model(triton_ckpt)
    assert _backends(loaded) == {"e3nn"}
    assert "loads with the e3nn backend" in caplog.text
    # ... and one trained with the fused convolution beside the e3nn contraction
    checkpoint["hyper_parameters"]["model"].update(backend="e3nn", fused_convolution=True)
    fused_ckpt = tmp_path / "fused.ckpt"
    torch.save(checkpoint, fused_ckpt)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="macelab.training.checkpoint"):
        loaded, _ = load_model(fused_ckpt)
    assert {m.conv_backend for m in loaded.interactions} == {"e3nn"}
    assert "fused convolution cannot run" in caplog.text


def test_fused_convolution_config_key():
    """model.fused_convolution is a runtime key (a checkpoint may resume with it changed:
    same function), and null leaves the e3nn convolution with the e3nn backend."""
    from macelab.model.build import RUNTIME_KEYS

    assert "fused_convolution" in RUNTIME_KEYS
    model = build_model({**CONFIG, "fused_convolution": None})
    assert {m.conv_backend for m in model.interactions} == {"e3nn"}
