"""Checkpoints as models: rebuild a MACE model from a macelab checkpoint, EMA weights in.

A macelab checkpoint carries the model config and the training-set statistics in its
hyper-parameters and the EMA of the weights in its ``macelab`` section, so no data and no
config file are needed to use it.

Checkpoints are read with ``weights_only=True`` (:func:`macelab.loading.load_weights`): a
file holding anything but tensors and plain values is refused before any of it runs, unless
the caller passes ``trust_pickle=True`` (docs/security.md).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from macelab.data.statistics import DatasetStatistics
from macelab.errors import ConfigError, DataError, MacelabError, UntrustedFileError
from macelab.loading import load_weights
from macelab.model import MACE, build_model
from macelab.model.build import RUNTIME_KEYS
from macelab.precision import default_dtype
from macelab.runtime import RuntimePlan, apply_runtime, plan_from_config, runnable
from macelab.training.artifact import RUN_KEYS, is_artifact, load_artifact, save_artifact

log = logging.getLogger(__name__)


def read_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint file, with a clear error if it is missing or not a macelab one.

    Only tensors and plain values are unpickled; anything else raises UntrustedFileError
    unless ``trust_pickle`` (then the whole pickle loads: trusted files only).
    """
    path = Path(path)
    if not path.is_file():
        raise MacelabError(
            f"checkpoint {path} does not exist; pass ckpt_path=<run folder>/checkpoints/"
            "last.ckpt (or best.ckpt) of a macelab training run."
        )
    try:
        checkpoint = load_weights(path, map_location, trust_pickle=trust_pickle)
    except UntrustedFileError:
        raise
    except Exception as error:  # a truncated or foreign file
        raise MacelabError(
            f"checkpoint {path} could not be read ({type(error).__name__}: {error}); the file "
            "is damaged or not a PyTorch checkpoint."
        ) from error
    if not isinstance(checkpoint, dict):
        checkpoint = {}
    hparams = checkpoint.get("hyper_parameters", {})
    if "model" not in hparams or "statistics" not in hparams or "macelab" not in checkpoint:
        raise MacelabError(
            f"checkpoint {path} was not written by macelab's training (it lacks the model "
            "config, the statistics or the EMA section)."
        )
    return checkpoint


def stored_dtype(checkpoint: dict[str, Any]) -> torch.dtype:
    """The floating dtype of the model weights in a checkpoint (float32 if none)."""
    for value in checkpoint["state_dict"].values():
        if torch.is_tensor(value) and value.is_floating_point():
            return value.dtype
    return torch.float32


def load_model(
    path: str | Path,
    *,
    use_ema: bool = True,
    map_location: str | torch.device = "cpu",
    backend: str | None = None,
    trust_pickle: bool = False,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model stored in a macelab checkpoint, and the checkpoint's hyper-parameters.

    With ``use_ema`` (the default, as MACE evaluates) the weights are the exponential moving
    average; otherwise the raw training weights. ``backend`` chooses the contraction
    implementation (:mod:`macelab.kernels`); by default the one the run trained with, or
    ``e3nn`` (logged) where that one cannot run, e.g. a Triton-trained model on a CPU: the
    backends compute the same function. ``trust_pickle`` loads a checkpoint that holds more
    than tensors and plain values (running code from it: trusted files only).

    ``path`` may also be a model folder (``model.yaml`` + ``model.safetensors``,
    :mod:`macelab.training.artifact`); its weights are the ones it was saved with, and the
    second value is its parsed ``model.yaml`` (with ``model`` and ``statistics`` as in a
    checkpoint's hyper-parameters).
    """
    if is_artifact(path):
        return load_artifact(path, map_location=map_location, backend=backend or "e3nn")
    checkpoint = read_checkpoint(path, map_location, trust_pickle=trust_pickle)
    hparams = checkpoint["hyper_parameters"]
    with default_dtype(stored_dtype(checkpoint)):
        model = build_model(hparams["model"], DatasetStatistics.from_dict(hparams["statistics"]))
    prefix = "model."
    state = {
        key[len(prefix) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }
    model.load_state_dict(state)
    ema = checkpoint["macelab"].get("ema")
    if use_ema and ema is not None:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in ema["shadow"]:
                    parameter.copy_(ema["shadow"][name].to(parameter.dtype))
    apply_runtime(model, runnable(checkpoint_plan(hparams, backend), str(path)))
    model.eval()
    return model, hparams


def checkpoint_plan(hparams: dict[str, Any], backend: str | None = None) -> RuntimePlan:
    """How the model of a checkpoint computes when loaded: the run's plan (its ``runtime``
    hyper-parameter, or the old keys ``model.backend``, ``model.fused_convolution`` and
    ``model.edge_chunk``), with ``backend`` overriding; no precision policy and no graphed
    or compiled step (those belong to a run, not to a model)."""
    plan = plan_from_config(hparams.get("runtime"), hparams.get("model"))
    changes: dict[str, Any] = {"precision_policy": None, "cuda_graphs": False, "compile": False}
    if backend is not None:
        changes["backend"] = backend
    return dataclasses.replace(plan, **changes)


def artifact_from_checkpoint(
    checkpoint: str | Path,
    folder: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    trust_pickle: bool = False,
) -> Path:
    """The EMA model of a macelab training checkpoint, written as an artifact
    (``trust_pickle`` as in :func:`load_model`)."""
    model, hparams = load_model(checkpoint, use_ema=True, backend="e3nn", trust_pickle=trust_pickle)
    run_config = hparams.get("run_config") or {}
    run = {k: run_config[k] for k in RUN_KEYS if k in run_config}
    return save_artifact(model, hparams["model"], hparams["statistics"], folder, metadata, run)


def check_resumable(path: str | Path, *, trust_pickle: bool = False) -> None:
    """Refuse to resume from a checkpoint without the training state a resume continues
    from (optimiser state, position in the epoch): one saved weights-only or stripped."""
    checkpoint = read_checkpoint(path, trust_pickle=trust_pickle)
    position = checkpoint.get("macelab") or {}
    if "optimizer_states" not in checkpoint or "batches_done_in_epoch" not in position:
        raise ConfigError(
            f"checkpoint {path} holds the model's weights but not the training state a resume "
            "continues from (optimiser state and position in the epoch; it was saved "
            "weights-only or stripped). Evaluate it with python -m macelab.evaluate "
            "ckpt_path=..., or start a new run from its weights with pretrained.ckpt_path=... "
            "instead of ckpt_path."
        )


def check_compatible(
    path: str | Path,
    model_cfg: dict[str, Any],
    *,
    atomic_numbers: list[int] | None = None,
    data_elements: list[int] | None = None,
    data_source: str | None = None,
    trust_pickle: bool = False,
) -> None:
    """Refuse to resume from a checkpoint whose model differs from the one this run builds.

    Args:
        path: the checkpoint.
        model_cfg: this run's model config; it must match the checkpoint's.
        atomic_numbers: the element table of this run's model; it must match the
            checkpoint's (its weights have one row per element).
        data_elements: the elements of this run's training data; each must be in the
            checkpoint's table.
        data_source: the training file, for the message.
        trust_pickle: as in :func:`read_checkpoint`.
    """
    checkpoint = read_checkpoint(path, trust_pickle=trust_pickle)
    hparams = checkpoint["hyper_parameters"]
    table = checkpoint["state_dict"].get("model.elements.atomic_numbers")
    if table is None:  # the model's own table; a fine-tuned one may have more elements
        table = hparams["model"].get("atomic_numbers") or hparams["statistics"]["atomic_numbers"]
    saved_table = [int(z) for z in torch.as_tensor(table).tolist()]
    new = sorted(set(data_elements or []) - set(saved_table))
    if new:
        raise DataError(
            f"the training data holds {_symbols(new)}, which the model of checkpoint {path} "
            f"does not know (its elements: {_symbols(saved_table)}). Resuming continues that "
            "model, and a model has no weights for an element it was built without: resume "
            "on the run's own data, remove the structures with these elements, or start a "
            "new run (without ckpt_path).",
            file=data_source,
            field="atomic_numbers",
        )
    if atomic_numbers is not None and sorted(atomic_numbers) != sorted(saved_table):
        raise ConfigError(
            f"checkpoint {path} has a model for the elements {_symbols(saved_table)}, but this "
            f"run builds one for {_symbols(atomic_numbers)} (from its training data); resume "
            "on the run's own data, or start a new run (without ckpt_path)."
        )
    # a key added to MACE after the checkpoint was written has its default there
    saved = {**_hyperparameter_defaults(), **hparams["model"]}
    differing = sorted(
        key
        for key in set(saved) | set(model_cfg)
        if saved.get(key) != model_cfg.get(key)
        and model_cfg.get(key) is not None
        and key not in RUNTIME_KEYS  # how the model computes, not what: may change
    )
    if differing:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {model_cfg.get(k)!r}" for k in differing)
        raise ConfigError(
            f"checkpoint {path} was trained with a different model config ({details}); resume "
            "with the run's own config (its .hydra/config.yaml) or start a new run."
        )


def _hyperparameter_defaults() -> dict[str, Any]:
    import inspect

    parameters = inspect.signature(MACE.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _symbols(atomic_numbers: list[int]) -> str:
    from ase.data import chemical_symbols

    return ", ".join(chemical_symbols[int(z)] for z in sorted(atomic_numbers))


def recorded_test_data(
    cfg: Any, hparams: dict[str, Any], run_config: Any, missing: str
) -> tuple[Any, Any]:
    """The data module a recorded run was tested on (or ``cfg.data``), set up for test, and
    the precision config to test in (``cfg.precision``, else the run's, else ``64``).

    ``cfg`` is an entry point's config (``data``, ``paths``, ``batch_size``,
    ``precision``); ``run_config`` the run's recorded config; ``missing`` ends the
    ConfigError raised when neither names the data. The data config's references
    (``${model.r_max}``, ``${seed}``) resolve against the recorded model and seed.
    """
    saved = OmegaConf.create(run_config or {})
    data_cfg = cfg.get("data") or saved.get("data")
    if data_cfg is None:
        raise ConfigError(
            f"{cfg.ckpt_path} does not record its data config; pass data=<name> (acac, 3bpa, "
            f"rmd17 or xyz with data.train_file/test_files){missing}."
        )
    context = OmegaConf.create(
        {
            "model": hparams["model"],
            "seed": saved.get("seed", 0),
            "paths": OmegaConf.to_container(cfg.paths, resolve=True),
            "data": data_cfg,
        }
    )
    data_cfg = context.data
    if cfg.get("batch_size") is not None:
        with open_dict(data_cfg):
            data_cfg.valid_batch_size = cfg.batch_size
    precision = cfg.get("precision") or saved.get("precision") or {"name": "64"}
    datamodule = instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    datamodule.check_elements(hparams["statistics"]["atomic_numbers"])
    return datamodule, precision
