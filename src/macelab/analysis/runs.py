"""Load macelab runs into pandas: one row per run, and learning curves per run.

A *run folder* is what ``python -m macelab.train`` writes (``.hydra/``, ``results.json``,
``run_info.json``, ``metrics.csv``, ``checkpoints/``); a *sweep folder* holds one run folder
per job (Hydra multirun) plus ``summary.csv``. :func:`load_runs` accepts either, or any folder
above them, and returns one row per run with

* ``run`` (the folder name) and ``path``;
* ``status`` (``COMPLETED``/``FAILED`` from ``job_status.json``; ``COMPLETED`` when a run has
  results but no status file, ``INCOMPLETE`` when it has neither);
* a column per config value that differs between the runs (dotted keys of the composed
  config, e.g. ``precision.name``, ``model.correlation``), so sweeps are tabled by what they
  varied;
* every test metric from ``results.json`` as ``<test set>/<metric>``;
* ``train_seconds``, ``num_parameters``, ``epochs``, ``global_step`` from ``run_info.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

RUN_INFO_KEYS = ("train_seconds", "num_parameters", "epochs", "global_step", "skipped_steps")


def find_run_folders(path: str | Path) -> list[Path]:
    """Run folders at or below ``path`` (a folder with ``.hydra/config.yaml``), sorted."""
    path = Path(path)
    if (path / ".hydra" / "config.yaml").is_file():
        return [path]
    folders = {p.parent.parent for p in path.rglob(".hydra/config.yaml")}
    return sorted(folders, key=_natural_key)


def _natural_key(path: Path) -> tuple:
    """Sort key: parts that start with a number (multirun jobs ``<n>`` or ``<n>_<overrides>``)
    by that number first."""
    parts = []
    for part in path.parts:
        number = re.match(r"\d+", part)
        parts.append((0, int(number.group()), part) if number else (1, 0, part))
    return tuple(parts)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become strings so they can be compared."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = str(list(value))
        else:
            flat[name] = value
    return flat


def run_config(run: str | Path) -> dict[str, Any]:
    """The run's composed config (``.hydra/config.yaml``) as a flat dotted-key dict."""
    path = Path(run) / ".hydra" / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return flatten(config or {})


def load_run(run: str | Path) -> dict[str, Any]:
    """One run as a flat record (all config values, metrics, run info, status)."""
    run = Path(run)
    results = _read_json(run / "results.json")
    info = _read_json(run / "run_info.json")
    status = _read_json(run / "job_status.json").get("status")
    if status is None:
        status = "COMPLETED" if results else "INCOMPLETE"
    record: dict[str, Any] = {"run": run.name, "path": str(run), "status": status}
    record["error"] = _read_json(run / "job_status.json").get("error", "")
    record.update({f"config.{k}": v for k, v in run_config(run).items()})
    for test_set, metrics in results.items():
        for metric, value in metrics.items():
            record[f"{test_set}/{metric}"] = value
    for key in RUN_INFO_KEYS:
        record[key] = info.get(key)
    return record


def load_runs(path: str | Path, keep_config: Iterable[str] = ()) -> pd.DataFrame:
    """All runs at or below ``path``: one row each, config columns only where runs differ.

    ``keep_config`` names config keys (without the ``config.`` prefix) to keep even when
    they are the same in every run.
    """
    records = [load_run(folder) for folder in find_run_folders(path)]
    if not records:
        return pd.DataFrame(columns=["run", "path", "status"])
    frame = pd.DataFrame.from_records(records)
    config_columns = [c for c in frame.columns if c.startswith("config.")]
    keep = {f"config.{k}" for k in keep_config}
    varying = [
        c for c in config_columns if c in keep or frame[c].astype(str).nunique(dropna=False) > 1
    ]
    ignored = {"config.paths.output_dir", "config.hydra.run.dir"}
    varying = [c for c in varying if c not in ignored]
    frame = frame.drop(columns=[c for c in config_columns if c not in varying])
    return frame.rename(columns={c: c[len("config.") :] for c in varying})


def varied_columns(frame: pd.DataFrame) -> list[str]:
    """The config columns of a :func:`load_runs` frame whose values differ between its runs
    (what the sweep varied); columns kept with ``keep_config`` but equal in every run are
    not among them."""
    fixed = {"run", "path", "status", "error", *RUN_INFO_KEYS}
    config = [c for c in frame.columns if c not in fixed and "/" not in c]
    return [c for c in config if frame[c].astype(str).nunique(dropna=False) > 1]


def run_label(row: pd.Series, columns: list[str]) -> str:
    """A short legend label from the varied config values of a run."""
    if not columns:
        return str(row["run"])
    return ", ".join(f"{c.split('.')[-1]}={row[c]}" for c in columns)


def load_learning_curve(run: str | Path) -> pd.DataFrame:
    """Validation metrics of a run over optimiser steps and wall time.

    Columns: ``epoch``, ``step``, ``elapsed_s`` (training wall time, when the run logged it)
    and every ``val/...`` metric, one row per validation.
    """
    path = Path(run) / "metrics.csv"
    if not path.is_file():
        return pd.DataFrame(columns=["epoch", "step", "elapsed_s"])
    metrics = pd.read_csv(path)
    val_columns = [c for c in metrics.columns if c.startswith("val/")]
    if not val_columns:
        return pd.DataFrame(columns=["epoch", "step", "elapsed_s"])
    rows = metrics.dropna(subset=[val_columns[0]]).copy()
    if "time/elapsed_s" in metrics.columns:
        elapsed = metrics.dropna(subset=["time/elapsed_s"])[["step", "time/elapsed_s"]]
        rows = rows.drop(columns=["time/elapsed_s"], errors="ignore").merge(
            elapsed.drop_duplicates("step", keep="last"), on="step", how="left"
        )
        rows = rows.rename(columns={"time/elapsed_s": "elapsed_s"})
    else:
        rows["elapsed_s"] = float("nan")
    keep = ["epoch", "step", "elapsed_s", *val_columns]
    return rows[keep].reset_index(drop=True)


def training_throughput(run: str | Path) -> float | None:
    """Training configurations per second of training time (validation excluded), from the
    ``time/train_configurations`` and ``time/train_epoch_s`` a run logs; None if absent."""
    path = Path(run) / "metrics.csv"
    if not path.is_file():
        return None
    metrics = pd.read_csv(path)
    columns = {"time/train_configurations", "time/train_epoch_s"}
    if not columns <= set(metrics.columns):
        return None
    rows = metrics.dropna(subset=list(columns))
    seconds = float(rows["time/train_epoch_s"].sum())
    return float(rows["time/train_configurations"].sum()) / seconds if seconds > 0 else None
