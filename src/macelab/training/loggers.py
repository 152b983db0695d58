"""Logger factories that need a decision at run time, and a clear error where the optional
package behind a logger is not installed (``pip install 'macelab[wandb]'`` / ``[tensorboard]``)."""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
import secrets
import string
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


RUN_ID_FILE = "wandb_run_id.txt"


def wandb_logger(resume_from: str | Path | None = None, **kwargs: Any):
    """A Lightning ``WandbLogger``, offline when there are no credentials or WANDB_MODE says so.

    Offline runs are written under ``save_dir/wandb`` and can be uploaded later with
    ``wandb sync``. The wandb run id is kept in ``<save_dir>/wandb_run_id.txt``: a run that
    resumes (``resume_from``: its checkpoint, the run's ``ckpt_path``) continues the wandb
    run of its folder (same id, ``resume="allow"``); a new run gets a new id. A run id set
    by the environment (``WANDB_RUN_ID``, as a sweep agent sets it) is used as it is.
    """
    require_package("wandb", "wandb", extra="wandb")
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE", "")
    offline = kwargs.pop("offline", None)
    if offline is None:
        offline = mode in ("offline", "dryrun", "disabled") or not wandb_credentials_available()
    if offline and mode != "disabled":
        log.info("wandb: no credentials found, logging offline to %s", kwargs.get("save_dir"))
    if kwargs.get("id") is None and kwargs.get("save_dir") is not None:
        kwargs["id"] = wandb_run_id(Path(kwargs["save_dir"]), resuming=resume_from is not None)
    return WandbLogger(offline=bool(offline), **kwargs)


def wandb_run_id(save_dir: Path, *, resuming: bool) -> str:
    """The wandb run id of the run in ``save_dir``: the stored one when ``resuming`` (and
    there is one), else a new one, stored (by rank 0 only) for a later resume."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    path = save_dir / RUN_ID_FILE
    stored = path.read_text().strip() if path.is_file() else ""
    run_id = os.environ.get("WANDB_RUN_ID") or (stored if resuming else "") or _new_run_id()
    if resuming and not stored:
        log.info("wandb: %s has no stored run id; starting wandb run %s", save_dir, run_id)
    if run_id != stored and rank_zero_only.rank == 0:
        save_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def _new_run_id() -> str:
    """Eight lowercase letters and digits, as wandb's own run ids."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))
