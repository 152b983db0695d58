"""Where the Hydra configs live, small helpers for reading them, and the OmegaConf
resolvers the configs use (registered when this module is imported, which every entry point
does before Hydra composes its config).

In a source checkout (editable install) the configs are the repository's ``conf/``; in a
built wheel they are packaged as ``macelab/conf`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import hashlib
import numbers
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from macelab.errors import ConfigError


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


RUN_NAME_MAX_LENGTH = 120


def run_name_from_overrides(overrides: str, max_length: int = RUN_NAME_MAX_LENGTH) -> str:
    """Hydra's ``hydra.job.override_dirname`` made safe as a folder and run name.

    ``model/size=tiny,precision='64',data.train_file=/data/mine.xyz`` becomes
    ``model.size=tiny,precision=64,data.train_file=mine.xyz``: group separators become
    dots, quotes go, a path keeps its last part, other characters that are awkward in a file
    name become ``_``. Longer than ``max_length``: cut, with a hash of the whole so that
    different overrides keep different names. No overrides: an empty string.
    """
    items = []
    for item in _split_top_level(overrides):
        key, separator, value = item.partition("=")
        key = key.lstrip("+~").replace("/", ".")
        value = value.strip("'\"")
        if "/" in value and not value.startswith(("[", "{")):
            value = value.rstrip("/").rsplit("/", 1)[-1]
        items.append(f"{key}{separator}{value}")
    name = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", ",".join(items)).strip("_")
    if len(name) > max_length:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: max_length - 9]}-{digest}"
    return name


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes (Hydra's item separator)."""
    items, current, depth, quote = [], "", 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        current += char
    if current:
        items.append(current)
    return items


def _run_name(task_name: str, overrides: str) -> str:
    """``${macelab.run_name:${task_name},${hydra:job.override_dirname}}``: the task, then what
    was overridden (``acac_model.correlation=2,precision=64``), for loggers."""
    suffix = run_name_from_overrides(str(overrides or ""))
    return f"{task_name}_{suffix}" if suffix else str(task_name)


def _run_dir_suffix(overrides: str) -> str:
    """``${macelab.run_dir_suffix:${hydra.job.override_dirname}}``: ``_`` and the safe
    overrides, or nothing without overrides (for ``hydra.run.dir`` and the sweep subdirs)."""
    suffix = run_name_from_overrides(str(overrides or ""))
    return f"_{suffix}" if suffix else ""


def register_resolvers() -> None:
    """Register macelab's OmegaConf resolvers (the configs use them; idempotent)."""
    OmegaConf.register_new_resolver("macelab.run_name", _run_name, replace=True)
    OmegaConf.register_new_resolver("macelab.run_dir_suffix", _run_dir_suffix, replace=True)


register_resolvers()
