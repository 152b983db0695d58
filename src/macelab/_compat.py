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
import inspect
import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

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
def quiet_e3nn_build():
    """Build e3nn blocks with e3nn's own code generation, without its TorchScript warnings.

    e3nn compiles its blocks to TorchScript, which under recent torch warns once per
    compiled class ("The TorchScript type system doesn't support instance-level
    annotations..."). The warning is harmless and says nothing a macelab user can act on,
    so it is silenced while a macelab model is built. We keep e3nn's defaults (TorchScript,
    optimised einsums): on the H100 they ran about 20% faster per training step than plain
    ``torch.fx`` code with ``torch.einsum`` (docs/results.md, time to accuracy), they
    work under autocast (bf16-mixed) and the outer e3nn modules take forward hooks. The one
    cost: TorchScript's profiling executor makes gradients differ in the last bit between
    identical early steps, so resumed runs agree with uninterrupted ones to rounding, not
    bit for bit.
    """
    import warnings

    import_e3nn()
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The TorchScript type system", category=UserWarning
        )
        yield


def quietly_built(init):
    """Decorate an ``__init__`` so that its e3nn blocks are built by :func:`quiet_e3nn_build`."""

    @functools.wraps(init)
    def wrapper(*args, **kwargs):
        with quiet_e3nn_build():
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


_FORCE_SAFE, _FORCE_UNSAFE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def lightning_loading(method: Callable[..., Any], trust_pickle: bool) -> Iterator[dict[str, bool]]:
    """Make a Lightning method that may load a checkpoint (``Trainer.fit``, ``Trainer.test``,
    ``LightningModule.load_from_checkpoint``) unpickle weights only, unless ``trust_pickle``.

    Yields the keyword arguments to call ``method`` with. Lightning >= 2.6 takes
    ``weights_only``, passed explicitly: left unset, torch's default is overridden by
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which importing mace-torch sets for the process.
    Older Lightning calls ``torch.load`` without it, so for the duration of the block torch's
    own switches decide instead (``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``, or the other one with
    ``trust_pickle``), and the environment is restored afterwards.
    """
    if "weights_only" in inspect.signature(method).parameters:
        yield {"weights_only": not trust_pickle}
        return
    saved = {name: os.environ.get(name) for name in (_FORCE_SAFE, _FORCE_UNSAFE)}
    os.environ.pop(_FORCE_UNSAFE if not trust_pickle else _FORCE_SAFE, None)
    os.environ[_FORCE_SAFE if not trust_pickle else _FORCE_UNSAFE] = "1"
    try:
        yield {}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def thermalize(atoms: Any, temperature_K: float, rng: Any = None) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K``: ASE's ``thermalize_momenta`` (ASE >=
    3.29, which deprecates ``MaxwellBoltzmannDistribution``, the same function under its
    old name), or ``MaxwellBoltzmannDistribution`` on older ASE."""
    from ase.md import velocitydistribution

    if hasattr(velocitydistribution, "thermalize_momenta"):
        velocitydistribution.thermalize_momenta(atoms, temperature_K, rng=rng)
    else:
        velocitydistribution.MaxwellBoltzmannDistribution(
            atoms, temperature_K=temperature_K, rng=rng
        )


@contextlib.contextmanager
def e3nn_torchscript(enabled: bool) -> Iterator[None]:
    """Build e3nn blocks with TorchScript (e3nn's default) or, ``enabled=False``, as plain
    ``torch.fx`` code: the same numbers to rounding. On a CPU the scripted blocks cost
    TorchScript's profiling runs over the first steps (about 40 s of the quick start on two
    cores, its first epoch 7x slower than the next) and no speed after that; on a GPU they
    run about 20% faster per step (see :func:`quiet_e3nn_build`)."""
    e3nn = import_e3nn()
    previous = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_script_fx=bool(enabled))
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(**previous)
