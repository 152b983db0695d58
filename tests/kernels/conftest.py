"""Fixtures of the kernel tests: one thread, the default dtype restored, e3nn warnings off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

_E3NN_SCRIPT_WARNING = "ignore:The TorchScript type system doesn't support instance-level"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings(_E3NN_SCRIPT_WARNING))


@pytest.fixture(autouse=True)
def one_thread_default_dtype() -> Iterator[None]:
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


@pytest.fixture
def interpret_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run Triton kernels in its CPU interpreter (skip when triton is not installed)."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
