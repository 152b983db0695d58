"""Result tables: our metrics per test set, beside the MACE paper's published numbers."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

COLUMNS = (
    ("energy_mae_meV", "E MAE (meV)"),
    ("energy_rmse_meV", "E RMSE (meV)"),
    ("forces_mae_meV_per_A", "F MAE (meV/Å)"),
    ("forces_rmse_meV_per_A", "F RMSE (meV/Å)"),
)


def paper_results(benchmark: str | None) -> dict[str, dict[str, float]]:
    """The MACE paper's numbers per test set for ``benchmark``, or {} if it has none.

    ``benchmark`` is ``acac``, ``3bpa`` (keyed by our test-set names) or
    ``rmd17/<molecule>`` (the one rMD17 test split, named ``test``).
    """
    if not benchmark:
        return {}
    text = resources.files("macelab.training").joinpath("paper_results.yaml").read_text()
    table = yaml.safe_load(text) or {}
    name, _, molecule = str(benchmark).partition("/")
    test_sets = dict((table.get(name) or {}).get("test_sets") or {})
    if molecule:
        return {"test": test_sets[molecule]} if molecule in test_sets else {}
    return test_sets


def format_table(
    results: dict[str, dict[str, Any]],
    paper: dict[str, dict[str, float]] | None = None,
    title: str = "Test results",
    note: str | None = None,
) -> str:
    """A markdown table: one row per test set, our numbers and, where known, the paper's;
    ``note`` (what to make of the numbers) as a paragraph below it."""
    paper = paper or {}
    header = ["test set", "structures"] + [label for _, label in COLUMNS]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for name, metrics in results.items():
        row = [name, str(metrics.get("num_structures", ""))]
        reference = paper.get(name, {})
        for key, _ in COLUMNS:
            value = metrics.get(key)
            cell = "—" if value is None else f"{value:.2f}"
            if key in reference:
                cell += f" (paper {reference[key]:g})"
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    if not results:
        lines.append("| (no test sets) |" + " |" * (len(header) - 1))
    if note:
        lines += ["", " ".join(str(note).split())]
    return "\n".join(lines) + "\n"


def write_results(
    output_dir: str | Path,
    results: dict[str, dict[str, Any]],
    paper: dict[str, dict[str, float]] | None = None,
    title: str = "Test results",
    note: str | None = None,
) -> str:
    """Write ``results.json`` and ``results.md`` into ``output_dir``; return the table."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    table = format_table(results, paper, title, note)
    (output_dir / "results.md").write_text(table)
    return table
