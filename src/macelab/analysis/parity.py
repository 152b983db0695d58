"""Parity plots: predicted against reference energies and forces, one figure per test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from macelab.analysis.backend import use_headless_backend


def gather_predictions(records: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """Concatenate per-batch prediction records (see ``training.module``) into arrays."""
    if not records:
        return {}
    keys = set(records[0])
    for record in records[1:]:
        keys &= set(record)
    return {key: torch.cat([r[key] for r in records]).numpy() for key in sorted(keys)}


def parity_figure(arrays: dict[str, np.ndarray], title: str):
    """A figure with energy-per-atom parity (left) and force-component parity (right)."""

    use_headless_backend()
    import matplotlib.pyplot as plt

    has_forces = "forces" in arrays and arrays["forces"].size > 0
    fig, axes = plt.subplots(1, 2 if has_forces else 1, figsize=(10 if has_forces else 5, 4.6))
    axes = np.atleast_1d(axes)
    mask = arrays["has_energy"].astype(bool)
    n_atoms = arrays["num_atoms"][mask]
    e_pred = arrays["energy"][mask] / n_atoms
    e_ref = arrays["energy_ref"][mask] / n_atoms
    # Energies per atom relative to the reference mean, so the axes show the variation.
    shift = e_ref.mean() if e_ref.size else 0.0
    _panel(
        axes[0],
        e_ref - shift,
        e_pred - shift,
        "reference energy per atom − mean (eV)",
        "predicted energy per atom − mean (eV)",
        f"energy: RMSE {1000 * np.sqrt(np.mean((e_pred - e_ref) ** 2)):.2f} meV/atom",
    )
    if has_forces:
        f_pred = arrays["forces"].reshape(-1)
        f_ref = arrays["forces_ref"].reshape(-1)
        _panel(
            axes[1],
            f_ref,
            f_pred,
            "reference force component (eV/Å)",
            "predicted force component (eV/Å)",
            f"forces: RMSE {1000 * np.sqrt(np.mean((f_pred - f_ref) ** 2)):.1f} meV/Å",
        )
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _panel(ax, reference, predicted, xlabel: str, ylabel: str, title: str) -> None:
    ax.scatter(reference, predicted, s=4, alpha=0.5, rasterized=True)
    if reference.size:
        low = float(min(reference.min(), predicted.min()))
        high = float(max(reference.max(), predicted.max()))
        ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")


def save_predictions(
    predictions: dict[str, list[dict[str, torch.Tensor]]], output_dir: str | Path
) -> list[Path]:
    """Write ``predictions_<test set>.npz`` (energies, forces and their references, atom
    counts) for every test set into ``output_dir``: the points of the parity plots, for
    notebooks and for comparing evaluations without rendering images."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, records in predictions.items():
        arrays = gather_predictions(records)
        if not arrays:
            continue
        path = output_dir / f"predictions_{name}.npz"
        np.savez_compressed(path, **arrays)
        written.append(path)
    return written


def save_parity_plots(
    predictions: dict[str, list[dict[str, torch.Tensor]]], output_dir: str | Path
) -> list[Path]:
    """Write ``parity_<test set>.png`` for every test set into ``output_dir``."""
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, records in predictions.items():
        arrays = gather_predictions(records)
        if not arrays:
            continue
        fig = parity_figure(arrays, f"{name}: predicted vs reference")
        path = output_dir / f"parity_{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
