"""The environment for command-line tests: the user's shell, not the test process's.

Importing mace-torch sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in ``os.environ`` for the
rest of the process (its calculator relies on it), so any command started later from the
same pytest worker inherits it, and e3nn's import then prints a torch warning on stderr
before macelab's own message. A user's shell has no such variable; neither do these
commands. Debug switches that would turn errors into tracebacks are removed too.
"""

from __future__ import annotations

import os

LEAKED = ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "MACELAB_DEBUG", "HYDRA_FULL_ERROR")


def cli_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without the variables above, one OpenMP thread, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKED}
    return {**env, "OMP_NUM_THREADS": "1", **extra}
