"""A trained model as a shareable artifact: weights as safetensors, everything else plain YAML.

A training checkpoint is a pickle (Lightning's format) and carries the optimiser state; a
model meant to be shared needs neither. The artifact is a folder:

- ``model.safetensors``: the model's parameters (the EMA weights by default), by name;
- ``model.yaml``: the model config, the training-set statistics (element table, E0s,
  scale, shift, average neighbour count) and the parameter dtype.

Loading it (:func:`load_artifact`) parses YAML and safetensors only, so no code from the
files runs; the buffers (Clebsch-Gordan coefficients, radial constants) are rebuilt by
macelab's code from the config rather than stored, so a change to that code shows up in
the artifact's predictions instead of being masked by stored constants.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from macelab.data.statistics import DatasetStatistics
from macelab.errors import MacelabError
from macelab.model import build_model
from macelab.model.build import RUNTIME_KEYS
from macelab.precision import default_dtype
from macelab.runtime import RuntimePlan, apply_runtime

FORMAT = "macelab-model"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "model.yaml"
RUN_KEYS = ("data", "precision", "seed", "benchmark")  # kept from the training run


def is_artifact(path: str | Path) -> bool:
    """True for a folder holding ``model.yaml`` and ``model.safetensors`` (or either file)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    named = path.is_dir() or path.name in (WEIGHTS, CONFIG)
    return named and (folder / WEIGHTS).is_file() and (folder / CONFIG).is_file()


def _plain(value: Any) -> Any:
    """Tensors and tuples as lists, so that ``yaml.safe_dump`` writes plain YAML."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def save_artifact(
    model: torch.nn.Module,
    model_config: dict[str, Any],
    statistics: dict[str, Any],
    folder: str | Path,
    metadata: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s parameters and config into ``folder``; return the folder.

    ``run`` keeps what evaluation needs from the training run: its ``data`` config (the
    test sets), ``precision``, ``seed`` and ``benchmark``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()}
    dtype = next(iter(state.values())).dtype
    save_file(state, str(folder / WEIGHTS), metadata={"format": FORMAT, "version": str(VERSION)})
    # how the model computes is chosen where it runs, not stored with what it computes
    model_config = {k: (None if k in RUNTIME_KEYS else v) for k, v in model_config.items()}
    config = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": str(dtype).removeprefix("torch."),
        "model": _plain(model_config),
        "statistics": _plain(statistics),
        "run": _plain(run or {}),
        "metadata": _plain(metadata or {}),
    }
    (folder / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def read_artifact(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The parsed ``model.yaml`` and the weights of an artifact folder, with clear errors."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config_file, weights_file = folder / CONFIG, folder / WEIGHTS
    for needed in (config_file, weights_file):
        if not needed.is_file():
            raise MacelabError(
                f"{needed} does not exist; a macelab model folder holds {CONFIG} and {WEIGHTS} "
                "(python -m macelab.export format=artifact writes one from a checkpoint)."
            )
    try:
        config = yaml.safe_load(config_file.read_text())
    except yaml.YAMLError as error:
        raise MacelabError(f"{config_file} is not valid YAML ({error}).") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise MacelabError(
            f"{config_file} is not a macelab model description (its 'format' field is not "
            f"{FORMAT!r})."
        )
    if int(config.get("version", 0)) > VERSION:
        raise MacelabError(
            f"{config_file} has format version {config['version']}, newer than this macelab "
            f"reads ({VERSION}); upgrade macelab."
        )
    try:
        weights = load_file(str(weights_file))
    except Exception as error:  # safetensors raises its own types for damaged files
        raise MacelabError(
            f"{weights_file} could not be read as safetensors ({error}); the file is damaged."
        ) from None
    return config, weights


def load_artifact(
    path: str | Path, map_location: str | torch.device = "cpu", backend: str | None = "e3nn"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of an artifact folder, in eval mode, and its parsed ``model.yaml``
    (``backend``: the contraction backend it runs with, :mod:`macelab.runtime`)."""
    config, weights = read_artifact(path)
    dtype = getattr(torch, str(config.get("dtype", "float32")))
    with default_dtype(dtype):
        statistics = DatasetStatistics.from_dict(config["statistics"])
        model = build_model(dict(config["model"]), statistics)
    apply_runtime(model, RuntimePlan(backend=backend or "e3nn"))
    expected = {n for n, _ in model.named_parameters()}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise MacelabError(
            f"the weights in {path} do not fit the model its {CONFIG} describes (missing "
            f"{missing[:5]}, unexpected {extra[:5]}); the folder mixes files of two models."
        )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(weights[name].to(parameter.dtype))
    return model.to(map_location).eval(), config
