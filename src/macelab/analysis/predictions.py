"""Predictions of a checkpoint on its test sets, with each structure's metadata.

:func:`predict_test_sets` rebuilds the data module the checkpoint was trained with (its run
config travels inside it), runs the EMA model on every test set and returns, per test set,
arrays of predicted and reference energies and forces plus the per-frame ``info`` of the
source file (e.g. ``dihedral_angle``, ``config_type``), which the plots use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from macelab.data.locate import locate
from macelab.errors import ConfigError, MissingDataError
from macelab.training.artifact import is_artifact, read_artifact
from macelab.training.checkpoint import load_model, read_checkpoint


def run_settings(
    path: str | Path, trust_pickle: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model config and the training run's config (data, seed, benchmark, ...) of a
    checkpoint or a model folder (``trust_pickle``: see :func:`read_checkpoint`)."""

    if is_artifact(path):
        config, _ = read_artifact(path)
        return config["model"], config.get("run") or {}
    hparams = read_checkpoint(path, trust_pickle=trust_pickle)["hyper_parameters"]
    return hparams["model"], hparams.get("run_config") or {}


def _data_module(
    model_config: dict[str, Any], saved: dict[str, Any], overrides: dict[str, Any] | None
):
    from hydra.utils import instantiate

    if "data" not in saved:
        raise ConfigError("this model records no data config; pass data=... to evaluate.")
    context = OmegaConf.create(
        {
            "model": model_config,
            "seed": saved.get("seed", 0),
            "paths": saved.get("paths", {}),
            "data": {**saved["data"], **(overrides or {})},
        }
    )
    datamodule = instantiate(context.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def _resolve(source: str, datamodule) -> str:
    """The file behind a store's source name (a benchmark path like
    ``dataset_acac/test_MD_300K.xyz`` is looked up as the data module would)."""
    if not source or Path(source).is_file():
        return source

    try:
        return str(locate(source, root=getattr(datamodule, "root", None), download=False).path)
    except MissingDataError:
        return source


def _frame_info(source: str, indices: np.ndarray) -> list[dict[str, Any]]:
    """``atoms.info`` of the given records of a source file (empty dicts if unreadable)."""
    try:
        import ase.io

        frames = ase.io.read(source, index=":")
    except Exception:  # a source that is not an ASE-readable file (e.g. rMD17 npz)
        return [{} for _ in indices]
    return [dict(frames[int(i)].info) if int(i) < len(frames) else {} for i in indices]


@torch.no_grad()
def predict_test_sets(
    ckpt_path: str | Path,
    *,
    max_structures: int | None = None,
    data_overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    trust_pickle: bool = False,
) -> dict[str, dict[str, Any]]:
    """Per test set: ``energy``, ``energy_ref``, ``num_atoms``, ``has_energy`` [n_structures],
    ``forces``, ``forces_ref`` [n_force_atoms, 3] (structures with forces only), ``index``
    (record index in the source file), ``info`` (list of per-record metadata), ``source``.

    ``max_structures`` evaluates only the first that many structures of each set;
    ``trust_pickle`` as in :func:`macelab.training.checkpoint.load_model`.
    """

    model_config, saved = run_settings(ckpt_path, trust_pickle=trust_pickle)
    model, _ = load_model(ckpt_path, map_location="cpu", trust_pickle=trust_pickle)
    model = model.to(device)
    datamodule = _data_module(model_config, saved, data_overrides)
    results: dict[str, dict[str, Any]] = {}
    for name, loader in zip(datamodule.test_set_names, datamodule.test_dataloader(), strict=True):
        records: dict[str, list] = {
            k: []
            for k in (
                "energy",
                "energy_ref",
                "num_atoms",
                "has_energy",
                "index",
                "forces",
                "forces_ref",
            )
        }
        seen = 0
        for batch in loader:
            batch = batch.to(device)
            with torch.enable_grad():
                output = model(batch, compute_forces=True)
            num_atoms = batch.ptr[1:] - batch.ptr[:-1]
            records["energy"].append(output["energy"].detach().double().cpu())
            records["energy_ref"].append(batch.energy.double().cpu())
            records["num_atoms"].append(num_atoms.cpu())
            records["has_energy"].append(batch.has_energy.cpu())
            records["index"].append(batch.index.cpu())
            mask = batch.has_forces[batch.batch]
            records["forces"].append(output["forces"].detach()[mask].double().cpu())
            records["forces_ref"].append(batch.forces[mask].double().cpu())
            seen += batch.num_graphs
            if max_structures is not None and seen >= max_structures:
                break
        arrays = {k: torch.cat(v).numpy() for k, v in records.items()}
        if max_structures is not None:
            for key in ("energy", "energy_ref", "num_atoms", "has_energy", "index"):
                arrays[key] = arrays[key][:max_structures]
        source = _resolve(getattr(datamodule.test_datasets[name], "source", ""), datamodule)
        arrays["source"] = source
        arrays["info"] = _frame_info(source, arrays["index"])
        results[name] = arrays
    return results
