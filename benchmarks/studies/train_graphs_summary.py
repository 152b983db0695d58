"""Summarise benchmarks/gpu/train_graphs.sh: seconds per epoch and errors, eager vs graphs.

Usage: ``python benchmarks/studies/train_graphs_summary.py OUT_DIR`` (the folder holding
``graphs_false/`` and ``graphs_true/`` run folders). Prints a markdown table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def summarise(run: Path) -> dict[str, object]:
    metrics = pd.read_csv(run / "metrics.csv")
    epochs = (
        metrics.dropna(subset=["time/train_epoch_s"]) if "time/train_epoch_s" in metrics else None
    )
    val = metrics.dropna(subset=["val/forces_rmse_meV_per_A"])
    results = (
        json.loads((run / "results.json").read_text()) if (run / "results.json").exists() else {}
    )
    row: dict[str, object] = {"run": run.name}
    if epochs is not None and len(epochs):
        times = epochs["time/train_epoch_s"].tolist()
        row["epoch_s_first"] = round(times[0], 2)
        row["epoch_s_rest_median"] = round(float(pd.Series(times[1:] or times).median()), 2)
    if len(val):
        row["val_F_rmse_per_epoch"] = [round(v, 2) for v in val["val/forces_rmse_meV_per_A"]]
    for name, values in results.items():
        row[f"{name} F rmse"] = round(values.get("forces_rmse_meV_per_A", float("nan")), 2)
    return row


def main(out: str) -> int:
    rows = [summarise(p) for p in sorted(Path(out).glob("graphs_*")) if p.is_dir()]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print("| " + " | ".join(keys) + " |")
    print("| " + " | ".join("---" for _ in keys) + " |")
    for row in rows:
        print("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
