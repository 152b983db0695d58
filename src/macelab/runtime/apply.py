"""Applying a :class:`~macelab.runtime.plan.RuntimePlan` to a model, in one place.

Every stage keeps its parameters, buffers and state-dict keys: implementations are swapped
in as subclasses (:mod:`macelab.kernels`), precisions declared on the stages
(:mod:`macelab.precision.policy`), both through :mod:`macelab.model.stages`. Steps that
run a model differently (CUDA graphs, compilation) are built by the trainer and the
calculator from the same plan (``cuda_graphs``, ``compile``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch

from macelab.data.statistics import DatasetStatistics
from macelab.errors import ConfigError
from macelab.kernels import check_backend, set_backend
from macelab.kernels.triton_contraction import triton_available
from macelab.model import build_model
from macelab.model.interaction import Interaction
from macelab.precision import load_precision, policy_of
from macelab.precision.policy import apply_policy, remove_policy
from macelab.runtime.plan import RuntimePlan, plan_from_config

log = logging.getLogger(__name__)


def runnable(plan: RuntimePlan, where: str = "the model") -> RuntimePlan:
    """``plan`` with what cannot run here replaced by the reference, each with a warning
    (loading a checkpoint trained elsewhere must not fail on how it was computed there)."""
    try:
        check_backend(plan.backend)
    except ValueError as error:
        log.warning("%s; %s loads with the e3nn backend", error, where)
        plan = dataclasses.replace(plan, backend="e3nn")
    if plan.fuses_convolution and (reason := triton_available()) is not None:
        log.warning("the fused convolution cannot run (%s); %s loads without it", reason, where)
        plan = dataclasses.replace(plan, fused_convolution=False)
    return plan


def apply_runtime(model: torch.nn.Module, plan: RuntimePlan) -> torch.nn.Module:
    """Make ``model`` compute as ``plan`` says (in place; returns ``model``). ConfigError
    where the plan cannot run here."""
    try:
        check_backend(plan.backend)
    except ValueError as error:
        raise ConfigError(
            f"runtime.backend={plan.backend}: {error}. Use runtime.backend=e3nn (the reference "
            "path, any device) or sparse_torch, or run where the backend can."
        ) from error
    for interaction in (m for m in model.modules() if isinstance(m, Interaction)):
        interaction.edge_chunk = None if plan.edge_chunk is None else int(plan.edge_chunk)
    try:
        set_backend(model, plan.backend, plan.fuses_convolution)
    except ValueError as error:
        raise ConfigError(
            f"runtime.fused_convolution={plan.fused_convolution} (runtime.backend="
            f"{plan.backend}): {error}. Set runtime.fused_convolution=false, or run on a CUDA "
            "GPU."
        ) from error
    if plan.precision_policy is not None:
        policy = policy_of(load_precision(plan.precision_policy))
        if policy is None:
            raise ConfigError(
                f"runtime.precision_policy={plan.precision_policy!r} is not a per-stage policy "
                "(conf/precision/policy_*.yaml); set the precision group instead."
            )
        apply_policy(model, policy)
    return model


def reference(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` back on the reference implementation in its own dtype (in place)."""
    remove_policy(model)
    return apply_runtime(model, RuntimePlan())


def build_for_run(
    model_cfg: Any,
    statistics: DatasetStatistics | None = None,
    *,
    runtime: Mapping[str, Any] | None = None,
    backend: str | None = None,
) -> torch.nn.Module:
    """:func:`macelab.model.build_model` with the runtime plan applied: ``runtime`` (a
    ``conf/runtime`` mapping) with the model config's old keys mapped onto it, and
    ``backend`` overriding both. ConfigError where the plan cannot run here."""
    plan = plan_from_config(runtime, model_cfg)
    if backend is not None:
        plan = dataclasses.replace(plan, backend=backend)
    return apply_runtime(build_model(model_cfg, statistics), plan)


def inference_precision(precision: Any, plan: RuntimePlan) -> Any:
    """The precision an inference entry point runs in: its precision group's (a name or a
    ``conf/precision`` mapping; None where the group is not given), or the plan's
    ``precision_policy`` where that is set and the group is not given or names the same.
    ConfigError where both are set and differ."""
    policy = plan.precision_policy
    if policy is None:
        return precision
    if precision is None:
        return load_precision(policy)
    name = precision.get("name") if hasattr(precision, "get") else precision
    if str(name) != str(policy):
        raise ConfigError(
            f"precision={name} and runtime.precision_policy={policy} disagree; set one of them "
            f"(precision={policy} alone does the same)."
        )
    return precision
