"""Logger factories that need a decision at run time."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE", "")
    offline = kwargs.pop("offline", None)
    if offline is None:
        offline = mode in ("offline", "dryrun", "disabled") or not wandb_credentials_available()
    if offline and mode != "disabled":
        log.info("wandb: no credentials found, logging offline to %s", kwargs.get("save_dir"))
    return WandbLogger(offline=bool(offline), **kwargs)
