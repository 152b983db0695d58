"""The one place where macelab adapts to the versions of its dependencies.

e3nn 0.4.4 (the release mace-torch pins) loads its Wigner constants with ``torch.load``
at import time. Since torch 2.6, ``torch.load`` defaults to ``weights_only=True`` and
refuses the ``slice`` objects stored in that file, so ``import e3nn.o3`` fails. The usual
advice is to export ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which turns the safety check
off for the whole process. Instead we allow exactly the one extra type (``slice``) while
e3nn is imported, and leave every other ``torch.load`` in the process untouched.

Every macelab module imports e3nn through :func:`import_e3nn` (``macelab/__init__.py``
calls it first), so this works whichever e3nn release is installed.
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType

import torch


def import_e3nn() -> ModuleType:
    """Import e3nn (and ``e3nn.o3``) under any supported torch version and return it."""
    allow = getattr(torch.serialization, "safe_globals", None)
    context = allow([slice]) if allow is not None else contextlib.nullcontext()
    with context:
        e3nn = importlib.import_module("e3nn")
        importlib.import_module("e3nn.o3")
        importlib.import_module("e3nn.nn")
    return e3nn


def e3nn_version() -> tuple[int, ...]:
    """The installed e3nn version as a tuple of ints, e.g. ``(0, 4, 4)``."""
    version = import_e3nn().__version__
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())
