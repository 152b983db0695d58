"""Our metrics beside the MACE paper's published numbers, as a table."""

from __future__ import annotations

from typing import Any

import pandas as pd

from macelab.training.results import paper_results

METRICS = ("energy_rmse_meV", "forces_rmse_meV_per_A", "energy_mae_meV", "forces_mae_meV_per_A")


def compare_with_paper(results: dict[str, dict[str, Any]], benchmark: str | None) -> pd.DataFrame:
    """One row per test set: our value and the paper's for each metric the paper gives."""
    paper = paper_results(benchmark)
    rows = []
    for test_set, metrics in results.items():
        row: dict[str, Any] = {"test set": test_set}
        for metric in METRICS:
            if metric in metrics:
                row[metric] = metrics[metric]
            if metric in paper.get(test_set, {}):
                row[f"paper {metric}"] = paper[test_set][metric]
        rows.append(row)
    return pd.DataFrame(rows)
