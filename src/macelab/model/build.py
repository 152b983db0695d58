"""Build a :class:`~macelab.model.mace.MACE` from a Hydra model config and the data statistics.

The config (``conf/model/mace.yaml`` plus ``conf/model/size/*.yaml``, or any mapping) holds
the hyperparameters by their contract names; the values that describe the training data and
are ``null`` in the config come from :class:`~macelab.data.statistics.DatasetStatistics`:

==================== ===========================================================
config key (null)    taken from the statistics
==================== ===========================================================
``atomic_numbers``   ``atomic_numbers`` (the element table)
``atomic_energies``  ``atomic_energies`` (E0s)
``avg_num_neighbors````avg_num_neighbors`` (must be computed with the same r_max)
``scale``            ``rms_forces`` (mace-torch's default ``rms_forces_scaling``)
``shift``            ``mean_interaction_energy_per_atom`` (mace-torch's ScaleShiftMACE)
==================== ===========================================================

The model built is the reference implementation in the default dtype. How it computes
(contraction backend, fused convolution, edge chunking, precision policy) is the runtime
plan's (:mod:`macelab.runtime`), applied after building; the plan's old keys in a model
config (``backend``, ``fused_convolution``, ``edge_chunk``: :data:`RUNTIME_KEYS`, found in
older configs and checkpoints) are not hyperparameters and are ignored here.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from macelab.config import check_types
from macelab.data.statistics import DatasetStatistics
from macelab.errors import ConfigError
from macelab.model.mace import MACE

log = logging.getLogger(__name__)

FROM_STATISTICS = ("atomic_numbers", "atomic_energies", "avg_num_neighbors", "scale", "shift")
HYPERPARAMETERS = tuple(
    name for name in inspect.signature(MACE.__init__).parameters if name != "self"
)
# keys of older model configs that say how, not what, the model computes (macelab.runtime)
RUNTIME_KEYS = ("backend", "fused_convolution", "edge_chunk")


def model_config_dict(model_cfg: Any) -> dict[str, Any]:
    """A plain dict of a model config (OmegaConf nodes resolved, ``_``-keys dropped)."""
    if model_cfg is None:
        return {}
    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    if not isinstance(model_cfg, Mapping):
        raise ConfigError(f"the model config must be a mapping, got {type(model_cfg).__name__}")
    return {str(k): v for k, v in model_cfg.items() if not str(k).startswith("_")}


def build_model(model_cfg: Any, statistics: DatasetStatistics | None = None) -> MACE:
    """The MACE model that ``model_cfg`` describes, completed by ``statistics``.

    Args:
        model_cfg: a dict or OmegaConf node with the hyperparameters of
            :class:`~macelab.model.mace.MACE` (e.g. ``cfg.model``); :data:`RUNTIME_KEYS`
            are ignored.
        statistics: the training set's statistics; required when any of
            ``atomic_numbers, atomic_energies, avg_num_neighbors, scale, shift`` is null.

    Raises:
        ConfigError: unknown keys, a null value without statistics, statistics computed
            with another cutoff than the model's ``r_max``, or a backend that cannot run here.
    """
    cfg = model_config_dict(model_cfg)
    for key in RUNTIME_KEYS:
        cfg.pop(key, None)
    unknown = sorted(set(cfg) - set(HYPERPARAMETERS))
    if unknown:
        raise ConfigError(
            f"unknown model config keys {unknown}; the MACE hyperparameters are "
            f"{', '.join(HYPERPARAMETERS)} (see conf/model/mace.yaml); how the model "
            "computes is set in conf/runtime."
        )
    missing = [k for k in FROM_STATISTICS if cfg.get(k) is None]
    if not cfg.get("scale_shift", True):
        missing = [k for k in missing if k not in ("scale", "shift")]
    if missing and statistics is None:
        raise ConfigError(
            f"model.{', model.'.join(missing)} are null and no dataset statistics were given; "
            "build the model through the data module (its statistics fill them) or set them."
        )
    r_max = float(cfg.get("r_max", inspect.signature(MACE.__init__).parameters["r_max"].default))
    if (
        "avg_num_neighbors" in missing
        and statistics is not None
        and not math.isclose(statistics.r_max, r_max, rel_tol=1e-9)
    ):
        raise ConfigError(
            f"the statistics' avg_num_neighbors was computed with r_max={statistics.r_max} Å "
            f"but model.r_max={r_max} Å; compute the statistics with the model's cutoff "
            "(data.r_max) or set model.avg_num_neighbors."
        )
    for key in missing:
        cfg[key] = _from_statistics(key, statistics)
    check_types(cfg, MACE.__init__, "model")
    try:
        return MACE(**cfg)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid model config: {error}") from error


def _from_statistics(key: str, statistics: DatasetStatistics) -> Any:
    if key == "atomic_numbers":
        return list(statistics.atomic_numbers)
    if key == "atomic_energies":
        return list(statistics.atomic_energies)
    if key == "avg_num_neighbors":
        return float(statistics.avg_num_neighbors)
    if key == "shift":
        return float(statistics.mean_interaction_energy_per_atom)
    # scale: the RMS of the force components; 1 if the data carry no forces (as mace-torch)
    scale = float(statistics.rms_forces)
    if not scale > 0 or not math.isfinite(scale):
        log.warning("the training forces' RMS is %s; using scale = 1.0", scale)
        scale = 1.0
    return scale


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
