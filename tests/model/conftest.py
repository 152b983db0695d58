"""Fixtures of the model tests: float64 by default, one thread, quiet e3nn code generation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# e3nn 0.4.4 TorchScript-compiles its generated code; torch warns about annotations there.
_E3NN_SCRIPT_WARNING = "ignore:The TorchScript type system doesn't support instance-level"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings(_E3NN_SCRIPT_WARNING))


@pytest.fixture(autouse=True)
def float64() -> Iterator[None]:
    """Model tests run in float64 (rounding-level checks); the default dtype is restored."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small models run fastest on one thread, and the CI machine has two cores for two
    pytest workers."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
