"""Logger factories that need a decision at run time, and a clear error where the optional
package behind a logger is not installed (``pip install 'macelab[wandb]'`` / ``[tensorboard]``)."""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
from pathlib import Path
from typing import Any

from macelab.errors import ConfigError

log = logging.getLogger(__name__)


def require_package(logger: str, *modules: str, extra: str) -> None:
    """Raise a :class:`ConfigError` naming the extra to install unless one of ``modules`` is
    importable (``logger`` is the config option, e.g. ``wandb`` for ``logger=wandb``)."""
    if any(_importable(module) for module in modules):
        return
    raise ConfigError(
        f"logger={logger} needs the {modules[0]} package, which is not installed: "
        f"pip install 'macelab[{extra}]' (or -e '.[{extra}]' in a checkout), or choose "
        "another logger (logger=csv writes metrics.csv into the run folder)."
    )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


def tensorboard_logger(**kwargs: Any):
    """A Lightning ``TensorBoardLogger`` (event files under ``save_dir/name``)."""
    require_package("tensorboard", "tensorboard", "tensorboardX", extra="tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(**kwargs)


def wandb_credentials_available() -> bool:
    """Whether wandb can log in: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(Path.home() / ".netrc").hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_logger(**kwargs: Any):
    """A Lightning ``WandbLogger``, offline when there are no credentials or WANDB_MODE says so.

    Offline runs are written under ``save_dir/wandb`` and can be uploaded later with
    ``wandb sync``.
    """
    require_package("wandb", "wandb", extra="wandb")
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE", "")
    offline = kwargs.pop("offline", None)
    if offline is None:
        offline = mode in ("offline", "dryrun", "disabled") or not wandb_credentials_available()
    if offline and mode != "disabled":
        log.info("wandb: no credentials found, logging offline to %s", kwargs.get("save_dir"))
    return WandbLogger(offline=bool(offline), **kwargs)
