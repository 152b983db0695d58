"""Runs from Weights & Biases: the public API online, the local run folders offline.

Online, :func:`load_wandb_sweep` reads a sweep's runs (config, summary metrics) with
``wandb.Api``. Offline (``WANDB_MODE=offline`` or no credentials) wandb's ``.wandb`` files
are a binary log meant for ``wandb sync``; every macelab run also writes its CSV metrics and
results into its run folder, so offline sweeps are read from those folders with
:func:`macelab.analysis.runs.load_runs`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from macelab.analysis.runs import flatten
from macelab.errors import ConfigError


def load_wandb_sweep(sweep_path: str, api: Any = None) -> pd.DataFrame:
    """One row per run of the sweep ``ENTITY/PROJECT/SWEEP_ID``: state, config values
    (dotted keys) and summary metrics (``test/<set>/<metric>`` as logged by macelab)."""
    if api is None:
        try:
            import wandb
        except ImportError as error:
            raise ConfigError(
                "reading a wandb sweep needs the wandb package: pip install 'macelab[wandb]' "
                "(offline sweeps are read from their run folders: macelab.analysis.runs.load_runs)"
            ) from error
        api = wandb.Api()
    sweep = api.sweep(sweep_path)
    rows = []
    for run in sweep.runs:
        row: dict[str, Any] = {"run": run.name, "id": run.id, "status": str(run.state).upper()}
        row.update(flatten(dict(run.config)))
        for key, value in dict(run.summary).items():
            if key.startswith("test/") and isinstance(value, int | float):
                test_set, _, metric = key[len("test/") :].rpartition("/")
                row[f"{test_set}/{metric}"] = value
        rows.append(row)
    return pd.DataFrame(rows)
