"""The runtime plan: how a model computes, declared in one place (``conf/runtime/``).

What a model computes is its hyperparameters (``conf/model``); how is this plan, which
changes no prediction beyond rounding:

==================== =====================================================================
field                meaning
==================== =====================================================================
``backend``          the symmetric contraction (Eq. 10-11): ``e3nn`` (dense reference),
                     ``sparse_torch``, ``triton`` or ``cueq`` (:mod:`macelab.kernels`)
``fused_convolution````Eq. 8's tensor product and neighbour sum in fused Triton kernels
                     (null: on with ``backend=triton`` only)
``edge_chunk``       messages in chunks of this many edges under activation checkpointing
                     (null: all at once)
``precision_policy`` a per-stage precision policy of ``conf/precision`` applied to the
                     model (inference paths; training takes its policy from ``precision=``)
``cuda_graphs``      replay each step from a CUDA graph per shape bucket (one GPU)
``compile``          trace each step into one program per shape bucket, fused by Inductor
==================== =====================================================================

Older configs and checkpoints name these ``model.backend``, ``model.fused_convolution``,
``model.edge_chunk``, ``training.cuda_graphs`` and ``training.compile_step``
(:data:`LEGACY_KEYS`); :func:`plan_from_config` still reads them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from macelab.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimePlan:
    """How a model computes (see the module docstring)."""

    backend: str = "e3nn"
    fused_convolution: bool | None = None
    edge_chunk: int | None = None
    precision_policy: str | None = None
    cuda_graphs: bool = False
    compile: bool = False

    @property
    def fuses_convolution(self) -> bool:
        """Whether the fused convolution runs (its null default follows the backend)."""
        if self.fused_convolution is None:
            return self.backend == "triton"
        return bool(self.fused_convolution)

    @property
    def step_strategy(self) -> str | None:
        """How each training step runs: ``compiled``, ``graphed`` or None (eager)."""
        if self.compile:
            return "compiled"
        return "graphed" if self.cuda_graphs else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | None) -> RuntimePlan:
        """The plan of a ``conf/runtime`` mapping; ConfigError names an unknown key."""
        config = _plain(config)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ConfigError(
                f"unknown runtime key(s) {unknown}; a runtime plan has {', '.join(sorted(fields))} "
                "(conf/runtime/default.yaml)."
            )
        plan = cls(**{k: v for k, v in config.items() if v is not None or k in _NULLABLE})
        if plan.edge_chunk is not None and int(plan.edge_chunk) < 1:
            raise ConfigError(
                f"runtime.edge_chunk must be a positive number of edges, got {plan.edge_chunk}"
            )
        return plan


_NULLABLE = ("fused_convolution", "edge_chunk", "precision_policy")

# the old names of the plan's fields: (config section, key) -> field
LEGACY_KEYS: dict[tuple[str, str], str] = {
    ("model", "backend"): "backend",
    ("model", "fused_convolution"): "fused_convolution",
    ("model", "edge_chunk"): "edge_chunk",
    ("training", "cuda_graphs"): "cuda_graphs",
    ("training", "compile_step"): "compile",
}


def _plain(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    return {str(k): v for k, v in dict(config).items() if not str(k).startswith("_")}


def plan_from_config(
    runtime: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> RuntimePlan:
    """The plan of a run: the ``runtime`` group, with the legacy keys of the ``model`` and
    ``training`` sections (:data:`LEGACY_KEYS`) mapped onto it where they are set (not
    null and not their default). A legacy key and the runtime group naming different
    values is a ConfigError."""
    plan = RuntimePlan.from_mapping(runtime)
    sections = {"model": _plain(model), "training": _plain(training)}
    default = RuntimePlan()
    changes: dict[str, Any] = {}
    for (section, key), field in LEGACY_KEYS.items():
        value = sections[section].get(key)
        if value is None or value == getattr(default, field):
            continue
        current = getattr(plan, field)
        if current != getattr(default, field) and current != value:
            raise ConfigError(
                f"{section}.{key}={value!r} (an old name) and runtime.{field}={current!r} "
                f"disagree; set runtime.{field} only."
            )
        log.info("%s.%s is an old name of runtime.%s", section, key, field)
        changes[field] = value
    return dataclasses.replace(plan, **changes) if changes else plan


def without_legacy_keys(model: Mapping[str, Any]) -> dict[str, Any]:
    """A model config with the plan's old keys taken out (what the model computes only)."""
    legacy = {key for section, key in LEGACY_KEYS if section == "model"}
    return {k: v for k, v in _plain(model).items() if k not in legacy}


def set_fields(runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields that a ``conf/runtime`` mapping sets: those not null and not their
    default (the defaults of an entry point's runtime group leave a model as it loads)."""
    plan, default = RuntimePlan.from_mapping(runtime), RuntimePlan()
    return {
        f.name: getattr(plan, f.name)
        for f in dataclasses.fields(RuntimePlan)
        if getattr(plan, f.name) is not None and getattr(plan, f.name) != getattr(default, f.name)
    }


def entry_plan(
    runtime: Mapping[str, Any] | None,
    base: RuntimePlan | None = None,
    *,
    unused: Mapping[str, str] | None = None,
) -> RuntimePlan:
    """The plan an entry point runs a loaded model with: ``base`` (the run's own plan, as a
    checkpoint records it; default the reference) with the fields that ``runtime`` sets
    (:func:`set_fields`) over it. ``unused`` maps the fields this entry point cannot apply
    to the reason: setting one is a ConfigError saying so."""
    fields = set_fields(runtime)
    for field, reason in (unused or {}).items():
        if field in fields:
            default = getattr(RuntimePlan(), field)
            raise ConfigError(
                f"runtime.{field}={fields[field]!r}: {reason}; leave runtime.{field} at "
                f"{'null' if default is None else str(default).lower()}."
            )
    return dataclasses.replace(base or RuntimePlan(), **fields)
