"""Per-stage precision policies: which dtype each named stage of MACE computes in.

A policy is data (``conf/precision/policy_*.yaml``, key ``policy``)::

    default: fp32                      # stages no pattern matches
    stages:
      "interactions.*.tensor_product": bf16
      "interactions.*.aggregation": {compute: bf16, accumulate: fp32}
      energy_sum: fp32

Keys are ``fnmatch`` patterns over the model's stage names (``docs/model.md``; e.g.
``interactions.0.linear_up``, ``products.1.contraction``, ``readouts.1``); where several
match, the most specific wins (an exact name, else the pattern with the most literal
characters), so ``"interactions.0.*"`` overrides ``"interactions.*"`` for layer-wise
policies. Values are a dtype (``fp64``, ``fp32``, ``bf16``, ``fp16``) or a mapping with
``compute`` and, for the two sums (``*.aggregation``, ``energy_sum``), ``accumulate``.

What a stage's dtypes mean (:func:`apply_policy`):

* ``compute``: floating inputs are cast to it and the stage runs under ``torch.autocast``
  to it (low precision) or with autocast off (fp32, fp64); its outputs stay in it;
* ``accumulate``: for a sum, the inputs are cast to it before summing and the result is
  cast back to ``compute``;
* parameters stay in fp32 (master weights), and buffers are never cast, so Clebsch-Gordan
  constants keep their fp32 (or fp64) values whatever the policy;
* forces and backward: autograd differentiates each operation in the dtype it ran in;
  positions enter and forces leave in the model's dtype (fp32), so ``edges`` in fp32 means
  distances, their derivatives and the forces' last accumulation are fp32.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx.experimental.proxy_tensor import get_proxy_mode

from macelab.errors import ConfigError, MacelabError
from macelab.model.stages import (
    StageLayer,
    StagePrecision,
    add_layer,
    remove_layer,
    stage_names,
    stage_precision,
)

DTYPES = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
LOW = {torch.bfloat16, torch.float16}
SUMS = ("aggregation", "energy_sum")


def _dtype(value: Any, where: str) -> torch.dtype:
    name = str(value).lower()
    if name not in DTYPES:
        raise ConfigError(
            f"precision policy: {where} has dtype {value!r}; use one of {', '.join(DTYPES)}."
        )
    return DTYPES[name]


def _specificity(pattern: str) -> tuple[int, int]:
    literal = sum(1 for c in pattern if c not in "*?[]")
    return (int(not any(c in pattern for c in "*?[")), literal)


@dataclass(frozen=True)
class Policy:
    """A parsed, validated precision policy (see the module docstring)."""

    name: str
    default: StagePrecision
    stages: dict[str, StagePrecision]

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> Policy:
        """Parse ``config`` (the YAML ``policy`` mapping); ConfigError names a bad key."""
        known = {"default", "stages"}
        unknown = set(config) - known
        if unknown:
            raise ConfigError(
                f"precision policy {name!r}: unknown key(s) {sorted(unknown)}; a policy has "
                "'default' (a dtype) and 'stages' (stage pattern -> dtype or "
                "{compute, accumulate})."
            )
        default = StagePrecision(_dtype(config.get("default", "fp32"), f"{name}.default"))
        stages = {
            str(pattern): _stage(value, f"{name}.stages[{pattern!r}]", str(pattern))
            for pattern, value in (config.get("stages") or {}).items()
        }
        return cls(name, default, stages)

    def uses(self, dtype: torch.dtype) -> bool:
        return any(
            dtype in (s.compute, s.accumulate) for s in [self.default, *self.stages.values()]
        )

    def resolve(self, model: torch.nn.Module) -> dict[str, StagePrecision]:
        """Every stage of ``model`` with its precision; ConfigError for a pattern that
        matches no stage (a typo would otherwise silently leave a stage in the default)."""
        names = stage_names(model)
        for pattern in self.stages:
            if not fnmatch.filter(names, pattern):
                raise ConfigError(
                    f"precision policy {self.name!r}: the stage pattern {pattern!r} matches "
                    f"no stage of this model; its stages are: {', '.join(names)}."
                )
        resolved = {}
        for stage in names:
            matches = [p for p in self.stages if fnmatch.fnmatchcase(stage, p)]
            best = max(matches, key=_specificity) if matches else None
            resolved[stage] = self.stages[best] if best else self.default
        return resolved


def _stage(value: Any, where: str, pattern: str) -> StagePrecision:
    if isinstance(value, Mapping):
        extra = set(value) - {"compute", "accumulate"}
        if extra or "compute" not in value:
            raise ConfigError(
                f"precision policy: {where} must be a dtype or {{compute: ..., accumulate: "
                f"...}}, got {dict(value)!r}."
            )
        accumulate = value.get("accumulate")
        if accumulate is not None and not any(s in pattern for s in SUMS):
            raise ConfigError(
                f"precision policy: {where} sets 'accumulate', which only the sums "
                f"({', '.join(SUMS)}) have; remove it or use 'compute'."
            )
        return StagePrecision(
            _dtype(value["compute"], where),
            _dtype(accumulate, where) if accumulate is not None else None,
        )
    return StagePrecision(_dtype(value, where))


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, tuple):
        return tuple(_cast(v, dtype) for v in value)
    return value


class NonFiniteEnergyError(MacelabError):
    """A policy's energies are not finite (a low-precision stage overflowed)."""


def _capturing() -> bool:
    """True while a graph is captured or traced (no data-dependent check may run there)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return True
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return True
    return get_proxy_mode() is not None


def _check_finite(energy: Any, policy: str) -> None:
    """Raise NonFiniteEnergyError when an inference energy is inf or nan (in training the
    loss check of the LightningModule reports it, and nonfinite=skip may skip the step)."""
    if isinstance(energy, torch.Tensor) and not _capturing() and not torch.isfinite(energy).all():
        raise NonFiniteEnergyError(
            f"precision policy {policy!r} produced non-finite energies: a stage in bf16/fp16 "
            "overflowed or lost its range (fp16 holds values below 65504 only). Evaluate with "
            "a higher precision (precision=32 or 64) or give the failing stages fp32 in the "
            "policy (e.g. the aggregation accumulate dtype or the readouts)."
        )


class PolicyStage(StageLayer):
    """The layer a policy puts over a stage's class: its ``forward`` runs the class's in the
    stage's declared ``stage_precision``; with ``policy_check`` (the policy's name), outside
    training, non-finite outputs raise."""

    stage_precision: StagePrecision
    policy_check: str | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        precision = self.stage_precision
        entry = precision.accumulate or precision.compute
        args = _cast(args, entry)
        kwargs = {k: _cast(v, entry) for k, v in kwargs.items()}
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        if entry in LOW:
            context = torch.autocast(device, dtype=entry)
        elif torch.is_autocast_enabled(device):
            context = torch.autocast(device, enabled=False)
        else:
            context = nullcontext()
        with context:
            output = super().forward(*args, **kwargs)
        if self.policy_check is not None and not self.training:
            _check_finite(output, self.policy_check)
        return _cast(output, precision.compute) if precision.accumulate else output


def set_stage_precision(
    module: torch.nn.Module, precision: StagePrecision, check: str | None = None
) -> None:
    """Declare ``module``'s precision and run it so (idempotent; replaces an earlier one)."""
    add_layer(module, PolicyStage)
    module.stage_precision = precision
    module.policy_check = check


def clear_stage_precision(module: torch.nn.Module) -> None:
    """Run ``module`` in its inputs' dtype again."""
    remove_layer(module, PolicyStage)
    module.__dict__.pop("stage_precision", None)
    module.__dict__.pop("policy_check", None)


def copy_policy(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Give every stage of ``target`` the precision of the same-named stage of ``source``
    (a copy of the architecture, e.g. the TorchScript-free model the compiled paths trace)."""
    for name, module in source.named_modules():
        precision = stage_precision(module)
        if precision is not None:
            check = getattr(module, "policy_check", None)
            set_stage_precision(target.get_submodule(name), precision, check)


def apply_policy(model: torch.nn.Module, policy: Policy) -> dict[str, StagePrecision]:
    """Make every stage of ``model`` run in its policy precision; returns the resolution.

    The model's parameters must be fp32 or fp64 (they are not cast). Applying another
    policy later replaces this one; :func:`remove_policy` restores plain forwards.
    """
    resolved = policy.resolve(model)
    for stage, precision in resolved.items():
        check = policy.name if stage == "energy_sum" else None
        set_stage_precision(model.get_submodule(stage), precision, check)
    return resolved


def remove_policy(model: torch.nn.Module) -> None:
    """Undo :func:`apply_policy`."""
    for module in model.modules():
        clear_stage_precision(module)
