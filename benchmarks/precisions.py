"""The precisions a path can run in, and the accuracy each must reach before it is timed.

A new precision (or, later, a per-stage precision policy) is one more entry in
:data:`PRECISIONS`: the harness runs macelab in every entry and gates it with ``bound``.

Bounds are on the relative error against the float64 macelab reference on the same batch
and weights, ``||E - E_ref|| / ||E_ref||`` and ``||F - F_ref|| / ||F_ref||`` (docs/benchmarks.md
explains the choice):

* ``64``: 1e-10. Same arithmetic up to summation order; a larger error is a bug, not rounding.
* ``32``: 1e-4. float32 rounding (2^-24 per operation) grows through two interactions and a
  correlation-3 product to ~1e-6..1e-5; 1e-4 leaves a margin of ten.
* ``tf32``: 1e-2. TensorFloat-32 matmuls round operands to 10 mantissa bits (~5e-4 each,
  METHOD.md measures ~3e-4 for one product); chained products of features compound this.
* ``16-mixed``, ``bf16-mixed`` and the ``policy_*`` entries: 5e-2. Autocast rounds matmul
  operands to 10 (fp16) or 7 (bf16) mantissa bits (1e-3..1e-2 per product); forces come
  from a backward pass through them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrecisionSpec:
    """How one precision runs a model.

    Attributes:
        name: macelab's precision name (``macelab.precision``), e.g. ``"bf16-mixed"``.
        param_dtype: dtype of weights and inputs.
        matmul_precision: ``torch.set_float32_matmul_precision`` while the path runs.
        autocast_dtype: dtype of ``torch.autocast`` around the forward pass, or None.
        grad_scaler: whether a training step scales the loss (fp16).
        bound: the largest relative energy/force error against float64 that passes.
        ceiling: which measured matmul ceiling the path's arithmetic runs on.
    """

    name: str
    param_dtype: torch.dtype
    matmul_precision: str
    autocast_dtype: torch.dtype | None
    grad_scaler: bool
    bound: float
    ceiling: str
    policy: str | None = None

    @contextlib.contextmanager
    def active(self, device_type: str) -> Iterator[None]:
        """Matmul precision and autocast of this precision, restored afterwards."""
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(self.matmul_precision)
        try:
            if self.autocast_dtype is None:
                yield
            else:
                with torch.autocast(device_type=device_type, dtype=self.autocast_dtype):
                    yield
        finally:
            torch.set_float32_matmul_precision(previous)


PRECISIONS: list[PrecisionSpec] = [
    PrecisionSpec("64", torch.float64, "highest", None, False, 1e-10, "fp64"),
    PrecisionSpec("32", torch.float32, "highest", None, False, 1e-4, "fp32"),
    PrecisionSpec("tf32", torch.float32, "high", None, False, 1e-2, "tf32"),
    PrecisionSpec("16-mixed", torch.float32, "highest", torch.float16, True, 5e-2, "fp16"),
    PrecisionSpec("bf16-mixed", torch.float32, "highest", torch.bfloat16, False, 5e-2, "bf16"),
    # Per-stage policies (conf/precision/policy_*.yaml): fp32 weights, the stages set their
    # own dtypes (no global autocast); bounds as bf16-mixed (fp16-mixed for the fp16 one).
    *(
        PrecisionSpec(name, torch.float32, "highest", None, False, 5e-2, "bf16", policy=name)
        for name in (
            "policy_safe",
            "policy_aggressive",
            "policy_layerwise",
            "policy_layerwise_reverse",
        )
    ),
    PrecisionSpec(
        "policy_safe_fp16", torch.float32, "highest", None, True, 5e-2, "fp16", "policy_safe_fp16"
    ),
]


def precision(name: str) -> PrecisionSpec:
    """The spec called ``name``; KeyError names the choices."""
    for spec in PRECISIONS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown precision {name!r}; choose one of {[p.name for p in PRECISIONS]}")


def macelab_precisions() -> tuple[list[PrecisionSpec], list[str]]:
    """The precisions macelab supports (``macelab.precision.precision_names``) that this file
    describes, in its order, and the names it does not describe yet (reported as skipped
    records by the harness, not silently dropped)."""
    try:
        from macelab.precision import precision_names
    except ImportError:
        return list(PRECISIONS), []
    names = precision_names()
    unknown = [n for n in names if n not in {p.name for p in PRECISIONS}]
    return [p for p in PRECISIONS if p.name in names], unknown


def undescribed(name: str) -> PrecisionSpec:
    """A placeholder for a macelab precision with no entry in :data:`PRECISIONS`."""
    return PrecisionSpec(name, torch.float32, "highest", None, False, float("nan"), "fp32")
