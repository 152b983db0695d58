"""How a model computes: the runtime plan (``conf/runtime/``) and the one function that
applies it (:func:`apply_runtime`)."""

from macelab.runtime.apply import (
    apply_runtime,
    build_for_run,
    inference_precision,
    reference,
    runnable,
)
from macelab.runtime.plan import (
    LEGACY_KEYS,
    RuntimePlan,
    entry_plan,
    plan_from_config,
    set_fields,
    without_legacy_keys,
)

__all__ = [
    "LEGACY_KEYS",
    "RuntimePlan",
    "apply_runtime",
    "build_for_run",
    "entry_plan",
    "inference_precision",
    "plan_from_config",
    "reference",
    "runnable",
    "set_fields",
    "without_legacy_keys",
]
