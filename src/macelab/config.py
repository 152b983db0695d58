"""Where the Hydra configs live, small helpers for reading them, and the OmegaConf
resolvers the configs use (registered when this module is imported, which every entry point
does before Hydra composes its config).

In a source checkout (editable install) the configs are the repository's ``conf/``; in a
built wheel they are packaged as ``macelab/conf`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import hashlib
import re
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
