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
import functools
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


@contextlib.contextmanager
def e3nn_without_torchscript():
    """Build e3nn modules as plain ``torch.fx`` code instead of TorchScript, then restore.

    macelab builds its models inside this context. Scripted e3nn blocks take twice as long
    to construct, warn on every construction under recent torch, and make gradients differ
    in the last bit between identical steps (TorchScript's profiling executor). The einsums
    are left as ``torch.einsum`` (``optimize_einsums=False``): e3nn's optimisation rewrites
    them into ``tensordot``, which autocast does not cast, so mixed precision
    (``precision=bf16-mixed``) would fail with "both inputs should have same dtype";
    ``torch.einsum`` is autocast-aware and still orders its contractions with opt_einsum at
    run time. The numbers are the same. It is a context, not a global setting, so other
    e3nn models in the process (mace-torch's, say) are built exactly as e3nn would build
    them.
    """
    e3nn = import_e3nn()
    previous = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_script_fx=False, optimize_einsums=False)
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(**previous)


def built_without_torchscript(init):
    """Decorate an ``__init__`` so that its e3nn blocks are built without TorchScript."""

    @functools.wraps(init)
    def wrapper(*args, **kwargs):
        with e3nn_without_torchscript():
            init(*args, **kwargs)

    return wrapper


def e3nn_version() -> tuple[int, ...]:
    """The installed e3nn version as a tuple of ints, e.g. ``(0, 4, 4)``."""
    version = import_e3nn().__version__
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def wigner_3j(l1: int, l2: int, l3: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """e3nn's real Wigner 3j symbol ``[2l1+1, 2l2+1, 2l3+1]`` with a release-independent sign.

    The symbol is unique up to its sign, and e3nn releases disagree on the sign for some
    triples with odd ``l1 + l2 + l3`` (e.g. ``(1, 2, 2)``, ``(1, 3, 3)``, ``(4, 4, 5)``: e3nn
    0.4.4 reads precomputed constants, >= 0.5 computes them). Those triples couple into
    irreps of unnatural parity, which appear as intermediates of macelab's generalised
    Clebsch-Gordan coefficients (correlation >= 3), so with e3nn's raw symbols the same
    weights would give a different model under another e3nn release. We fix the sign: the
    first entry (in C order) whose magnitude exceeds 1e-6 of the largest is positive.
    (Triples with even ``l1 + l2 + l3``, the only ones e3nn's tensor products use in MACE,
    agree between releases to rounding.)
    """
    o3 = import_e3nn().o3
    symbol = o3.wigner_3j(l1, l2, l3, dtype=dtype)
    flat = symbol.flatten()
    first = int((flat.abs() > 1e-6 * flat.abs().max()).nonzero()[0, 0])
    return symbol if flat[first] > 0 else -symbol
