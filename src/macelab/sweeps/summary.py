"""Collect the runs of a sweep folder into one table: ``summary.csv`` and ``summary.md``.

One row per run (job folder), with the overrides that varied across the sweep, the status
(``COMPLETED`` / ``FAILED`` with the error, or ``RUNNING`` when no status was written yet),
every test-set metric from ``results.json`` as ``<test set>/<metric>``, the training time and
the parameter count from ``run_info.json``. A failed run is a row that says so.

``python -m macelab.sweeps.summary <sweep folder>`` rebuilds the table by hand.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

STATUS_FILE = "job_status.json"


def job_folders(sweep_dir: Path) -> list[Path]:
    """Folders under ``sweep_dir`` that hold a Hydra job (they have ``.hydra/``), in job
    order: folders are named ``<job number>`` or ``<job number>_<overrides>``."""
    folders = [p.parent for p in sweep_dir.glob("*/.hydra")]

    def job_number(folder: Path) -> tuple[bool, int, str]:
        number = re.match(r"\d+", folder.name)
        return (number is None, int(number.group()) if number else 0, folder.name)

    return sorted(folders, key=job_number)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.exists() else []
    result = {}
    for item in items or []:
        key, _, value = str(item).partition("=")
        result[key.lstrip("+~")] = value
    return result


def collect_rows(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The rows of the summary, the override keys that vary across runs, the metric columns.

    Metric columns are ``<test set>/<metric>`` from the runs' ``results.json``; override keys
    may hold a slash too (config groups such as ``model/size``), so the two are kept apart.
    """
    sweep_dir = Path(sweep_dir)
    rows, all_overrides, metric_keys = [], [], set()
    for job in job_folders(sweep_dir):
        overrides = _overrides(job)
        all_overrides.append(overrides)
        status = _read_json(job / STATUS_FILE)
        info = _read_json(job / "run_info.json")
        row: dict[str, Any] = {"run": job.name, **overrides}
        row["status"] = status.get("status", "RUNNING")
        row["error"] = status.get("error", "")
        row["train_seconds"] = info.get("train_seconds")
        row["num_parameters"] = info.get("num_parameters")
        for test_set, metrics in _read_json(job / "results.json").items():
            for metric, value in metrics.items():
                row[f"{test_set}/{metric}"] = value
                metric_keys.add(f"{test_set}/{metric}")
        rows.append(row)
    keys = sorted({k for o in all_overrides for k in o})
    varying = [k for k in keys if len({o.get(k) for o in all_overrides}) > 1]
    return rows, varying, sorted(metric_keys)


def write_summary(sweep_dir: str | Path) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir`` (atomically)."""
    sweep_dir = Path(sweep_dir)
    rows, varying, metric_keys = collect_rows(sweep_dir)
    columns = ["run", *varying, "status", *metric_keys, "train_seconds", "num_parameters", "error"]
    csv_path = sweep_dir / "summary.csv"
    md_path = sweep_dir / "summary.md"
    _atomic_write(csv_path, _to_csv(rows, columns))
    _atomic_write(md_path, _to_markdown(rows, columns))
    return csv_path, md_path


def _to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buffer.getvalue()


def _format(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _to_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m macelab.sweeps.summary <sweep folder>", file=sys.stderr)
        return 2
    csv_path, md_path = write_summary(args[0])
    print(md_path.read_text())
    print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
