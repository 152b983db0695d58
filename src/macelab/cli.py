"""Command-line behaviour shared by every entry point.

Problems a user can fix (:class:`macelab.errors.MacelabError`) end the program with their
one-paragraph message on stderr and exit status 2, without a Python traceback. Set
``MACELAB_DEBUG=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``) to see the traceback too.
Anything else is a bug: it keeps its traceback.

Output is one line per log record (:func:`tidy_output`): Lightning's messages go through
Hydra's handlers (terminal and the run's log file) only, without Lightning's own copy, its
product tips, or warnings about Lightning's own code that a user cannot act on.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import textwrap
import warnings
from collections.abc import Callable
from typing import Any

from macelab.errors import MacelabError

EXIT_USER_ERROR = 2


def debug_enabled() -> bool:
    """Whether tracebacks of user errors should be shown."""
    flags = (os.environ.get("MACELAB_DEBUG", ""), os.environ.get("HYDRA_FULL_ERROR", ""))
    return any(flag not in ("", "0", "false", "False") for flag in flags)


def format_user_error(error: BaseException) -> str:
    """The error as one wrapped paragraph, prefixed with ``error:``."""
    text = " ".join(str(error).split())
    return textwrap.fill(
        f"error: {text}", width=100, break_long_words=False, break_on_hyphens=False
    )


def find_user_error(error: BaseException | None) -> MacelabError | None:
    """The first :class:`MacelabError` in ``error``'s chain (Hydra and Lightning wrap them)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, MacelabError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def user_errors_exit(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate an entry point so that user errors exit cleanly with their message.

    Put it *under* ``@hydra.main`` (on the task function): a user error is then reported
    before Hydra prints its own traceback. In a multirun the error is re-raised instead, so
    that Hydra records the job as failed and goes on with the others.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tidy_output()
        try:
            return main(*args, **kwargs)
        except BaseException as error:  # re-raised below unless it is a user error
            user_error = find_user_error(error)
            if user_error is None or debug_enabled() or _in_multirun():
                raise
            print(format_user_error(user_error), file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None

    return wrapper


# Lightning's loggers: the package logger has its own console handler besides propagating to
# the root logger (Hydra's), so each record printed twice; lightning.pytorch and
# lightning.fabric add one and stop propagating when imported before logging is configured.
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
# Lightning's advertisements for its cloud products (litlogger, litmodels), logged as INFO.
TIP_PREFIX = "💡 Tip:"
# Warnings raised inside third-party code about that code (deprecated calls between torch and
# Lightning), which nothing in a user's config or command changes.
UNACTIONABLE_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP_PREFIX)


_DROP_TIPS = _DropTips()


def tidy_output() -> None:
    """Make the output of an entry point one line per record, without tips or noise.

    Called by :func:`user_errors_exit` when an entry point starts (after Hydra configured
    logging); the entry points that train import Lightning first so that this finds its
    handlers. Without handlers on the root logger (a library user's own script), Lightning's
    handlers are left alone, so its messages still show.
    """
    if logging.getLogger().handlers:
        for name in LIGHTNING_LOGGERS:
            if name.split(".")[0] not in sys.modules:
                continue
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if not isinstance(handler, logging.FileHandler):
                    logger.removeHandler(handler)
            logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _DROP_TIPS not in logger.filters:
            logger.addFilter(_DROP_TIPS)
    for message in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def progress_bar(setting: Any = "auto") -> bool:
    """``trainer.enable_progress_bar``: ``auto`` shows the bar on a terminal only. In a file
    or a CI log a progress bar leaves only fragments of its last frame; the per-epoch log
    lines (:class:`macelab.training.callbacks.EpochProgress`) say the same there."""
    if str(setting).lower() == "auto":
        return sys.stdout.isatty()
    return bool(setting)


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # no Hydra, or not inside a Hydra job
        return False


NUMERIC_GROUPS = ("precision",)


def quote_numeric_group_options(
    argv: list[str], groups: tuple[str, ...] = NUMERIC_GROUPS
) -> list[str]:
    """Quote numeric options of config groups: ``precision=64`` -> ``precision='64'``.

    Hydra parses ``precision=64`` as the integer 64 and refuses integers as config-group
    options; the precision group's options are named ``64``, ``32``, ``16-mixed`` ... as
    Lightning names them, so the entry points quote numbers for that group before Hydra
    parses the command line (``-m precision=64,32`` works too).
    """
    pattern = re.compile(rf"^([+~]?(?:{'|'.join(map(re.escape, groups))}))=(.+)$")
    quoted = []
    for argument in argv:
        match = pattern.match(argument)
        if match:
            values = [f"'{v}'" if re.fullmatch(r"\d+", v) else v for v in match.group(2).split(",")]
            argument = f"{match.group(1)}={','.join(values)}"
        quoted.append(argument)
    return quoted


# Config groups whose options need a Hydra plugin from an optional extra: (module, extra).
PLUGIN_GROUPS = {"hparams_search": ("hydra_plugins.hydra_optuna_sweeper", "hparams")}


def missing_plugin(argv: list[str]) -> str | None:
    """A message naming the extra to install if ``argv`` picks a config group option whose
    Hydra plugin is not installed (Hydra's own error only says that a config is missing)."""
    import importlib.util

    for argument in argv:
        key, _, value = argument.partition("=")
        group = key.lstrip("+~")
        if group not in PLUGIN_GROUPS or value in ("", "null"):
            continue
        module, extra = PLUGIN_GROUPS[group]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return (
                f"{group}={value} needs a Hydra plugin that is not installed ({module}): "
                f"pip install 'macelab[{extra}]' (or -e '.[{extra}]' in a checkout)."
            )
    return None


def prepare_argv() -> None:
    """Rewrite ``sys.argv`` in place for Hydra (see :func:`quote_numeric_group_options`);
    exit with a one-paragraph message when it needs a plugin that is not installed."""
    message = missing_plugin(sys.argv[1:])
    if message is not None:
        print(format_user_error(MacelabError(message)), file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)
    sys.argv[1:] = quote_numeric_group_options(sys.argv[1:])
