"""Plots of harness results: water scaling (time and memory against atoms) and the timed
workloads per path, for people who would rather look than read the tables.

    python -m benchmarks.plot_speed RESULTS.json [RESULTS.json ...] --out docs/figures/speed.png

Reads the records of ``benchmarks/run.py`` (``results.json``, or the copies kept in
``benchmarks/results/``); several files are merged, a later file's record of the same
workload, system and path replacing an earlier one. Skipped and refused records are left
out of the plots (the tables say why).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# The timed workloads drawn as bars: (workload, system label prefix, title, unit of the bar)
BARS = (
    ("train_step", "3BPA x5", "training step, batch 5", "ms"),
    ("train_step", "3BPA x32", "training, batch 32", "configurations/s"),
    ("infer_small", "3BPA x1", "one molecule, E + F", "ms"),
    ("infer_large", "water", "water 2,100 atoms", "atoms/s"),
)


def _path(record: dict[str, Any]) -> str:
    return f"{record['implementation']}/{record['precision']}"


def load(files: list[Path]) -> list[dict[str, Any]]:
    """The measured records of ``files`` (later files win on the same workload, system and
    path)."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for file in files:
        for record in json.loads(Path(file).read_text()):
            if not record.get("speed"):
                continue
            key = (record["workload"], record["system"].get("label", ""), _path(record))
            merged[key] = record
    return list(merged.values())


def scaling_series(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, float]]]:
    """Per path: ``(atoms, ms, peak GiB)`` of the water scaling runs, by atoms."""
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in records:
        if r["workload"] != "scaling":
            continue
        speed = r["speed"]
        memory = speed.get("peak_memory_MiB")
        atoms = int(r["system"]["n_atoms"])
        point = (atoms, speed["ms"], memory / 1024 if memory else float("nan"))
        series.setdefault(_path(r), []).append(point)
    return {path: sorted(points) for path, points in sorted(series.items())}


def bar_values(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per bar title: path -> value (ms for latencies, the throughput otherwise)."""
    values: dict[str, dict[str, float]] = {}
    for workload, prefix, title, unit in BARS:
        for r in records:
            if r["workload"] != workload or not r["system"].get("label", "").startswith(prefix):
                continue
            speed = r["speed"]
            value = speed["ms"] if unit == "ms" else speed["throughput"]
            values.setdefault(title, {})[_path(r)] = value
    return values


def plot(records: list[dict[str, Any]], out: Path) -> Path:
    """Write the figure (scaling on top, one bar chart per timed workload below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, bars = scaling_series(records), bar_values(records)
    fig = plt.figure(figsize=(12, 8.5), constrained_layout=True)
    grid = fig.add_gridspec(2, max(2, len(bars)))
    time_ax = fig.add_subplot(grid[0, : grid.ncols // 2])
    memory_ax = fig.add_subplot(grid[0, grid.ncols // 2 :])
    for path, points in series.items():
        atoms = [p[0] for p in points]
        time_ax.plot(atoms, [p[1] for p in points], marker="o", label=path)
        memory_ax.plot(atoms, [p[2] for p in points], marker="o", label=path)
    for ax, label in ((time_ax, "ms per energy + forces call"), (memory_ax, "peak GiB")):
        ax.set(xscale="log", yscale="log", xlabel="atoms (water)", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    time_ax.set_title("water: time per call")
    memory_ax.set_title("water: peak allocated memory")
    if series:
        time_ax.legend(fontsize=7)
    units = {title: unit for _, _, title, unit in BARS}
    for column, (title, by_path) in enumerate(bars.items()):
        ax = fig.add_subplot(grid[1, column])
        names = sorted(by_path, key=by_path.get)
        ax.barh(names, [by_path[n] for n in names], color="tab:blue")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(units[title] + (" (lower is better)" if units[title] == "ms" else ""))
        ax.tick_params(axis="y", labelsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files")
    parser.add_argument("--out", type=Path, default=Path("speed.png"))
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.results if not f.is_file()]
    if missing:
        raise SystemExit(f"no such results file: {', '.join(missing)}; pass results.json files")
    print(plot(load(args.results), args.out))


if __name__ == "__main__":
    main()
