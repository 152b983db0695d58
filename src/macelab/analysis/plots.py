"""The plots researchers expect of MACE runs, as functions that return matplotlib figures.

Every figure has a title, labelled axes with units, and is saved by :func:`save` as PNG; in
Jupyter it is also shown under its cell (see :mod:`macelab.analysis.backend`). Inputs are
the DataFrames and dicts of :mod:`macelab.analysis.runs` and
:mod:`macelab.analysis.predictions`, so notebooks stay thin.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from macelab.analysis.backend import use_headless_backend

use_headless_backend()
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from macelab.analysis.runs import load_learning_curve, run_label  # noqa: E402


def figures_folder(figures_dir: str | Path | None = None) -> Path:
    """Where a notebook saves its figures, created if needed.

    ``figures_dir`` when given. Otherwise the working folder, which is the notebook's own
    folder when Jupyter (or ``jupyter nbconvert --execute``) runs it, and papermill's
    ``--cwd``; at the root of a macelab checkout (papermill started there) ``outputs/figures``
    instead, so that figures never land among the repository's files.
    """
    if figures_dir is not None:
        folder = Path(figures_dir)
    else:
        folder = Path.cwd()
        if (folder / "pyproject.toml").is_file() and (folder / "src" / "macelab").is_dir():
            folder = folder / "outputs" / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save(fig, folder: str | Path, name: str) -> Path:
    """Save ``fig`` as ``<folder>/<name>.png`` and return the path (the figure stays open,
    so that Jupyter shows it under the cell)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def learning_curves(
    runs: pd.DataFrame,
    varied: Sequence[str],
    metric: str = "val/forces_mae_meV_per_A",
):
    """Validation metric against optimiser steps (left) and training wall time (right)."""
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    for _, row in runs.iterrows():
        curve = load_learning_curve(row["path"])
        if curve.empty or metric not in curve:
            continue
        label = run_label(row, list(varied))
        by_step.plot(curve["step"], curve[metric], "o-", ms=3, label=label)
        if curve["elapsed_s"].notna().any():
            by_time.plot(curve["elapsed_s"], curve[metric], "o-", ms=3, label=label)
    unit = "meV/Å" if "forces" in metric else "meV"
    name = metric.split("/", 1)[-1]
    for axis, xlabel in ((by_step, "optimiser step"), (by_time, "training wall time (s)")):
        axis.set_xlabel(xlabel)
        axis.set_ylabel(f"validation {name} ({unit})")
        axis.set_yscale("log")
    by_step.set_title("learning curves over steps")
    by_time.set_title("learning curves over wall time")
    if by_step.get_legend_handles_labels()[0]:
        by_step.legend(fontsize=7)
    fig.tight_layout()
    return fig


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the points (throughput, error) that no other point beats on both."""
    order = np.argsort(-points[:, 0])  # fastest first
    front, best_error = [], np.inf
    for index in order:
        if points[index, 1] < best_error:
            front.append(index)
            best_error = points[index, 1]
    return np.array(front, dtype=int)


def accuracy_vs_throughput(
    runs: pd.DataFrame,
    metric: str,
    throughput: str = "throughput_configs_per_s",
    group: str = "precision.name",
):
    """Error against training throughput, one colour per ``group``, with each group's
    Pareto front (faster and more accurate is down and to the right)."""
    fig, axis = plt.subplots(figsize=(6, 4.5))
    data = runs.dropna(subset=[metric, throughput])
    groups = data[group].astype(str) if group in data else pd.Series("all", index=data.index)
    for name, subset in data.groupby(groups):
        points = subset[[throughput, metric]].to_numpy(dtype=float)
        (line,) = axis.plot(points[:, 0], points[:, 1], "o", label=str(name))
        front = points[pareto_front(points)]
        front = front[np.argsort(front[:, 0])]
        axis.plot(front[:, 0], front[:, 1], "-", color=line.get_color(), alpha=0.6)
    unit = "meV/Å" if "forces" in metric else "meV"
    axis.set_xlabel("training throughput (configurations/s)")
    axis.set_ylabel(f"{metric} ({unit})")
    axis.set_title("accuracy vs throughput (lines: Pareto front per group)")
    if len(data):
        axis.legend(title=group, fontsize=8)
    fig.tight_layout()
    return fig


def equivariance_by_precision(report: dict[str, Any] | None):
    """Equivariance error per precision from a precision report (``precision_report.json``).

    The report maps each precision name to ``{"energy_equivariance_rel": [...],
    "forces_equivariance_rel": [...]}`` (or their max/median); without a report the figure
    says so.
    """
    fig, axis = plt.subplots(figsize=(7, 4))
    rows = []
    for name, entry in (report or {}).items():
        if not isinstance(entry, dict):
            continue
        for quantity in ("energy", "forces"):
            for key in (f"{quantity}_equivariance_rel_max", f"{quantity}_equivariance_rel"):
                value = entry.get(key)
                if value is not None:
                    value = max(value) if isinstance(value, list) else value
                    rows.append((name, quantity, float(value)))
                    break
    if rows:
        frame = pd.DataFrame(rows, columns=["precision", "quantity", "error"])
        table = frame.pivot(index="precision", columns="quantity", values="error")
        table.plot.bar(ax=axis, logy=True)
        axis.set_ylabel("relative equivariance error (max over rotations)")
    else:
        axis.text(
            0.5,
            0.5,
            "no precision report found\n(run python -m macelab.precision_report)",
            ha="center",
            va="center",
            transform=axis.transAxes,
        )
        axis.set_ylabel("relative equivariance error")
    axis.set_xlabel("precision")
    axis.set_title("equivariance error per precision")
    fig.tight_layout()
    return fig


def error_distribution(predictions: dict[str, dict[str, Any]]):
    """Histograms of force-component errors (left) and energy-per-atom errors (right)."""
    fig, (forces_axis, energy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name, arrays in predictions.items():
        if len(arrays.get("forces", [])):
            errors = 1000 * (arrays["forces"] - arrays["forces_ref"]).ravel()
            forces_axis.hist(errors, bins=60, histtype="step", density=True, label=name)
        mask = arrays["has_energy"].astype(bool)
        if mask.any():
            per_atom = 1000 * (arrays["energy"] - arrays["energy_ref"])[mask]
            energy_axis.hist(
                per_atom / arrays["num_atoms"][mask],
                bins=30,
                histtype="step",
                density=True,
                label=name,
            )
    forces_axis.set_xlabel("force component error (meV/Å)")
    energy_axis.set_xlabel("energy error per atom (meV/atom)")
    for axis in (forces_axis, energy_axis):
        axis.set_ylabel("density")
        axis.legend(fontsize=7)
    forces_axis.set_title("force error distribution")
    energy_axis.set_title("energy error distribution")
    fig.tight_layout()
    return fig


def temperature_of(name: str) -> float | None:
    """The temperature in a test-set name (``test_600K`` -> 600.0), or None."""
    import re

    match = re.search(r"(\d+)\s*K", name)
    return float(match.group(1)) if match else None


def error_vs_temperature(results: dict[str, dict[str, float]], paper: dict | None = None):
    """Energy and force RMSE of the MD test sets against their temperature (3BPA: 300,
    600, 1200 K; AcAc: 300, 600 K), with the paper's numbers where known."""
    fig, (energy_axis, forces_axis) = plt.subplots(1, 2, figsize=(10, 4))
    points = sorted(
        (temperature_of(name), name) for name in results if temperature_of(name) is not None
    )
    temperatures = [t for t, _ in points]
    for axis, key, unit in (
        (energy_axis, "energy_rmse_meV", "meV"),
        (forces_axis, "forces_rmse_meV_per_A", "meV/Å"),
    ):
        ours = [results[name].get(key, np.nan) for _, name in points]
        axis.plot(temperatures, ours, "o-", label="this model")
        if paper:
            theirs = [paper.get(name, {}).get(key, np.nan) for _, name in points]
            if np.isfinite(theirs).any():
                axis.plot(temperatures, theirs, "s--", label="MACE paper")
        axis.set_xlabel("MD temperature of the test set (K)")
        axis.set_ylabel(f"{key.split('_')[0]} RMSE ({unit})")
        axis.set_yscale("log")
        axis.legend()
    energy_axis.set_title("energy error vs temperature")
    forces_axis.set_title("force error vs temperature")
    fig.tight_layout()
    return fig


def dihedral_curves(arrays: dict[str, Any], angle_key: str = "dihedral_angle", slice_key=None):
    """Energy along dihedral scans, model against DFT, relative to each slice's minimum.

    ``angle_key`` names the per-frame angle in ``info`` (AcAc: ``dihedral_angle``). For 3BPA,
    whose frames carry ``dihedrals = [alpha, beta, gamma]``, pass ``angle_key="dihedrals:0"``
    (the index of the varied angle) and ``slice_key="dihedrals:1"`` (the angle fixed per slice).
    """

    def value(info: dict, key: str | None):
        if key is None:
            return "scan"
        name, _, index = key.partition(":")
        item = info.get(name)
        if item is None:
            return None
        return float(np.asarray(item).ravel()[int(index)]) if index else float(item)

    rows = []
    for i, info in enumerate(arrays["info"]):
        angle, label = value(info, angle_key), value(info, slice_key)
        if angle is not None and label is not None:
            rows.append((label, angle, arrays["energy"][i], arrays["energy_ref"][i]))
    fig, axis = plt.subplots(figsize=(6.5, 4.2))
    frame = pd.DataFrame(rows, columns=["slice", "angle", "model", "dft"])
    for label, subset in frame.groupby("slice"):
        subset = subset.sort_values("angle")
        shift = subset["dft"].min()
        prefix = "" if slice_key is None else f"{slice_key.split(':')[0]}={label:g}: "
        (line,) = axis.plot(
            subset["angle"], 1000 * (subset["dft"] - shift), "o", label=f"{prefix}DFT"
        )
        axis.plot(
            subset["angle"],
            1000 * (subset["model"] - shift),
            "-",
            color=line.get_color(),
            label=f"{prefix}model",
        )
    if frame.empty:
        axis.text(
            0.5,
            0.5,
            f"no '{angle_key}' in this test set",
            ha="center",
            va="center",
            transform=axis.transAxes,
        )
    axis.set_xlabel("dihedral angle (degrees)")
    axis.set_ylabel("energy relative to the slice's DFT minimum (meV)")
    axis.set_title("dihedral scan: model vs DFT")
    axis.legend(fontsize=7)
    fig.tight_layout()
    return fig


def md_energy_trace(log: pd.DataFrame):
    """Potential, kinetic and total energy of an MD run over time (``md.log`` columns:
    ``time_ps``, ``epot_eV``, ``ekin_eV``, ``etot_eV``), total energy drift in the title."""
    fig, axis = plt.subplots(figsize=(7, 4))
    for column, label in (("epot_eV", "potential"), ("ekin_eV", "kinetic"), ("etot_eV", "total")):
        if column in log:
            axis.plot(log["time_ps"], log[column] - log[column].iloc[0], label=label)
    drift = float(log["etot_eV"].iloc[-1] - log["etot_eV"].iloc[0]) if "etot_eV" in log else np.nan
    axis.set_xlabel("time (ps)")
    axis.set_ylabel("energy change from the start (eV)")
    axis.set_title(f"MD energies (total energy drift {1000 * drift:.2f} meV)")
    axis.legend()
    fig.tight_layout()
    return fig
