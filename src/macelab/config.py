"""Where the Hydra configs live, and small helpers for reading them.

In a source checkout (editable install) the configs are the repository's ``conf/``; in a
built wheel they are packaged as ``macelab/conf`` (see ``pyproject.toml``).
"""

from __future__ import annotations

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
