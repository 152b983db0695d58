"""How a model computes: the runtime plan (``conf/runtime/``) and the one function that
applies it (:func:`apply_runtime`)."""

from macelab.runtime.apply import apply_runtime, build_for_run, reference, runnable
from macelab.runtime.plan import LEGACY_KEYS, RuntimePlan, plan_from_config, without_legacy_keys

__all__ = [
    "LEGACY_KEYS",
    "RuntimePlan",
    "apply_runtime",
    "build_for_run",
    "plan_from_config",
    "reference",
    "runnable",
    "without_legacy_keys",
]
