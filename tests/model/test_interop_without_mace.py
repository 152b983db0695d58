"""Interop functions explain what to install when mace-torch is absent."""

from __future__ import annotations

import sys

import pytest

from macelab.interop import load_mace_torch_file, to_mace_torch

from .helpers import small_model


@pytest.fixture
def no_mace_torch(monkeypatch):
    """Make ``import mace`` fail as if mace-torch were not installed."""
    for name in [m for m in sys.modules if m == "mace" or m.startswith("mace.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mace", None)
    monkeypatch.setitem(sys.modules, "mace.modules", None)


def test_to_mace_torch_needs_mace_torch(no_mace_torch):
    model = small_model(channels=2, max_L=0, max_ell=1, correlation=1, num_interactions=1)
    with pytest.raises(ImportError, match=r"pip install 'macelab\[mace\]'"):
        to_mace_torch(model)


def test_loading_a_model_file_needs_mace_torch(no_mace_torch, tmp_path):
    with pytest.raises(ImportError, match="install mace-torch"):
        load_mace_torch_file(tmp_path / "model.model")
