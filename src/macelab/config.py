"""Where the Hydra configs live, and small helpers for reading them.

In a source checkout (editable install) the configs are the repository's ``conf/``; in a
built wheel they are packaged as ``macelab/conf`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def config_dir() -> Path:
    """The folder that holds ``train.yaml`` and the config groups."""
    packaged = Path(__file__).parent / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"


CONFIG_DIR = str(config_dir())


def to_dict(cfg: DictConfig | dict[str, Any] | None) -> dict[str, Any]:
    """A resolved plain-dict copy of a config node (for hyper-parameters and JSON)."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def check_types(values: Mapping[str, Any], function: Callable[..., Any], prefix: str) -> None:
    """Raise a ConfigError naming the key and the value if a value has the wrong type.

    ``function``'s type hints say what each keyword takes (e.g. ``MACE.__init__`` for
    ``cfg.model``); keys it does not know, keys starting with ``_`` and hints this check does
    not understand are left to the function itself. Hydra reads ``model.channels=abc`` as
    the string ``'abc'``; without this check it would fail deep inside with a message that
    names neither.

    Args:
        values: the config section, as a plain dict.
        function: the callable the section configures.
        prefix: the section's name, e.g. ``model``, for the message.
    """
    from macelab.errors import ConfigError

    hints = typing.get_type_hints(function)
    for key, value in values.items():
        hint = hints.get(str(key))
        if str(key).startswith("_") or hint is None or _matches(value, hint):
            continue
        wanted = _describe(hint)
        raise ConfigError(
            f"{prefix}.{key}={value!r} has the wrong type: {prefix}.{key} takes {wanted}, not "
            f"{_describe_value(value)}; set it to {wanted} on the command line or in the "
            "config file."
        )


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits ``hint`` (True for hints this check does not understand)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # numbers.Integral: numpy integers too
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is Path:
        return isinstance(value, str | Path)
    if origin in (Sequence, list, tuple):
        if isinstance(value, str | bytes | Mapping) or not hasattr(value, "__len__"):
            return False
        if not isinstance(value, list | tuple):  # arrays, tensors: their items are not judged
            return True
        return not args or all(_matches(item, args[0]) for item in value)
    if origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            return False
        return len(args) != 2 or all(_matches(item, args[1]) for item in value.values())
    return True


def _describe(hint: Any) -> str:
    """A hint (or a value's type) in words: ``int | None`` -> ``an integer or null``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin in (Sequence, list, tuple) or hint in (list, tuple):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (Mapping, dict) or hint in (dict, DictConfig):
        return "a mapping"
    words = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path",
        type(None): "null",
    }
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def _describe_value(value: Any) -> str:
    """What a config value is, in words (``4.5`` -> ``a decimal number``)."""
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return _describe(type(value))


def _plural(hint: Any) -> str:
    words = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
    return words.get(hint, _describe(hint))
