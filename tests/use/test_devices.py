"""``device=cuda`` where torch sees no GPU: one paragraph and exit status 2, before any
model is loaded (it was a raw ``Torch not compiled with CUDA enabled`` traceback)."""

from __future__ import annotations

import pytest
import torch

from macelab.devices import resolve_device
from macelab.errors import ConfigError

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_not_a_device():
    with pytest.raises(ConfigError, match="device='gpu0' is not a device"):
        resolve_device("gpu0")


@no_gpu
def test_cuda_without_a_gpu_says_what_to_pass():
    with pytest.raises(ConfigError, match=r"accelerator=cuda but torch sees no CUDA GPU.*=cpu"):
        resolve_device("cuda", key="accelerator")


@no_gpu
def test_calculator_refuses_cuda_before_loading(tmp_path):
    from macelab.calculator import MACECalculator

    missing = tmp_path / "not-there.ckpt"  # never opened: the device is checked first
    with pytest.raises(ConfigError, match="device=cuda"):
        MACECalculator(str(missing), device="cuda")
