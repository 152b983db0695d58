"""The machinery every measurement shares: the run's context and time budget, the float64
reference and the correctness gate, guarded execution, and the record's ``speed`` fields.

Before a path is timed it is compared with the float64 reference on the same batch
(:func:`check`); a path over its precision's bound is refused, never timed. Whatever goes
wrong inside one path's measurement (no time left, a failed build, out of memory, any error)
is recorded against that path by :func:`guarded`, and the run goes on.
"""

from __future__ import annotations

import gc
import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch_geometric.data import Batch

from benchmarks.implementations import ModelStatistics, Path
from benchmarks.settings import Settings
from benchmarks.systems import MoleculeSet

log = logging.getLogger("benchmarks")


@dataclass
class Budget:
    """Wall-clock budget of the whole run; workloads and paths past it are skipped."""

    seconds: float
    started: float = field(default_factory=time.perf_counter)

    def spent(self) -> float:
        return time.perf_counter() - self.started

    def exhausted(self) -> bool:
        return self.spent() >= self.seconds

    def reason(self) -> str:
        return f"time budget of {self.seconds:.0f} s spent (--budget-s)"


@dataclass
class Reference:
    """Float64 reference energies/forces on one batch, and the isolated-atom energy sum."""

    energy: torch.Tensor
    forces: torch.Tensor
    e0_sum: torch.Tensor
    label: str


@dataclass
class Context:
    """Everything the workloads share."""

    settings: Settings
    device: torch.device
    paths: list[Path]
    reference: Path
    mace_reference: torch.nn.Module
    molecules: MoleculeSet
    stats: ModelStatistics
    common: dict[str, Any]
    budget: Budget
    records: list[dict[str, Any]] = field(default_factory=list)
    ceilings: dict[str, float] = field(default_factory=dict)
    refs: dict[str, Reference] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


def cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _e0_sum(ctx: Context, batch: Batch) -> torch.Tensor:
    table = torch.zeros(119, dtype=torch.float64)
    for z, energy in ctx.stats.atomic_energies.items():
        table[z] = energy
    per_atom = table[batch.atomic_numbers.cpu()]
    return torch.zeros(batch.num_graphs, dtype=torch.float64).index_add_(
        0, batch.batch.cpu(), per_atom
    )


def reference_on(ctx: Context, key: str, batch: Batch) -> Reference:
    """The float64 reference on ``batch`` (cached under ``key``)."""
    if key not in ctx.refs:
        path = ctx.reference
        energy, forces = path.forward(path.prepare(batch), training=False)
        ctx.refs[key] = Reference(
            energy.detach().double().cpu(),
            forces.detach().double().cpu(),
            _e0_sum(ctx, batch),
            path.name,
        )
        cleanup(ctx.device)
    return ctx.refs[key]


def lazy_reference(ctx: Context, key: str, batch: Batch) -> Callable[[], Reference]:
    """The reference on ``batch``, computed inside the first path's guarded body, so that a
    failing reference is recorded against the paths instead of stopping the run."""
    return lambda: reference_on(ctx, key, batch)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    denominator = torch.linalg.norm(b).item()
    value = torch.linalg.norm(a - b).item()
    return value / denominator if denominator > 0 else value


def check(
    path: Path,
    energy: torch.Tensor,
    forces: torch.Tensor,
    ref: Reference,
    checked_on: str,
) -> dict[str, Any]:
    """Relative energy (without the E0 sum) and force errors against the reference."""
    e = energy.detach().double().cpu().reshape(-1)
    f = forces.detach().double().cpu()
    energy_err = _rel(e - ref.e0_sum, ref.energy - ref.e0_sum)
    forces_err = _rel(f, ref.forces)
    bound = path.spec.bound
    passed = all(math.isfinite(x) and x <= bound for x in (energy_err, forces_err))
    return {
        "reference": ref.label,
        "energy_rel_err": energy_err,
        "forces_rel_err": forces_err,
        "energy_rel_err_total": _rel(e, ref.energy),
        "bound": bound,
        "passed": passed,
        "checked_on": checked_on,
    }


def refusal(correctness: dict[str, Any]) -> str:
    return (
        f"errors vs float64 (E {correctness['energy_rel_err']:.2e}, "
        f"F {correctness['forces_rel_err']:.2e}) exceed the bound {correctness['bound']:.0e}"
    )


def bytes_per_value(path: Path) -> int:
    dtype = path.spec.autocast_dtype or path.spec.param_dtype
    return torch.finfo(dtype).bits // 8


def speed_fields(
    ctx: Context, path: Path, timing: Any, throughput: float, unit: str, flops: dict[str, Any]
) -> dict[str, Any]:
    """The record's ``speed``: time, throughput, memory, and the roofline comparison."""
    seconds = timing.ms * 1e-3
    tflops = ctx.ceilings.get(path.spec.ceiling)
    gbps = ctx.ceilings.get("copy")
    compute_ms = flops["per_call"] / (tflops * 1e12) * 1e3 if tflops else None
    memory_ms = flops["bytes_per_call"] / (gbps * 1e9) * 1e3 if gbps else None
    floors = [v for v in (compute_ms, memory_ms) if v is not None]
    floor_ms = max(floors) if floors else None
    return {
        "ms": timing.ms,
        "ms_p10": timing.ms_p10,
        "ms_p90": timing.ms_p90,
        "repetitions": timing.repetitions,
        "throughput": throughput,
        "throughput_unit": unit,
        "peak_memory_MiB": timing.peak_memory_mib,
        "reserved_memory_MiB": timing.reserved_memory_mib,
        "achieved_tflops": flops["per_call"] / seconds / 1e12,
        "achieved_GBps": flops["bytes_per_call"] / seconds / 1e9,
        "ceiling_tflops": tflops,
        "ceiling_GBps": gbps,
        "floor_ms": floor_ms,
        "fraction_of_ceiling": floor_ms / timing.ms if floor_ms is not None else None,
        "bound_by": (
            None
            if floor_ms is None
            else "compute"
            if (compute_ms or 0) >= (memory_ms or 0)
            else "memory"
        ),
    }


def guarded(ctx: Context, record: dict[str, Any], path: Path | None, body: Callable[[], None]):
    """Run ``body`` (which fills ``record``); budget, build, memory and other failures are
    recorded as ``skipped`` with the reason instead of stopping the run."""
    ctx.records.append(record)
    if path is not None:
        record["implementation"], record["precision"] = path.implementation, path.spec.name
        record["runtime"] = None if path.runtime is None else path.runtime.to_dict()
        if path.unavailable:
            record["skipped"] = path.unavailable
            return
    if ctx.budget.exhausted():
        record["skipped"] = ctx.budget.reason()
        return
    try:
        if path is not None:
            try:
                path.ensure_model()
            except Exception as exc:
                path.unavailable = f"model build failed: {type(exc).__name__}: {exc}"[:400]
                log.error("%s: %s\n%s", path.name, path.unavailable, traceback.format_exc())
                record["skipped"] = path.unavailable
                return
            record["setup_s"] = path.setup_s
        body()
    except torch.cuda.OutOfMemoryError as exc:
        record["skipped"] = "out of memory: " + str(exc).splitlines()[0][:200]
        record["speed"] = None
    except Exception as exc:
        record["skipped"] = f"error: {type(exc).__name__}: {exc}"[:400]
        record["speed"] = None
        log.error(
            "%s %s: %s", record["workload"], path.name if path else "", traceback.format_exc()
        )
    finally:
        if path is not None:
            path.graphed = None  # captured CUDA graphs hold a memory pool: one record each
        cleanup(ctx.device)
        _log_outcome(record)


def _log_outcome(record: dict[str, Any]) -> None:
    speed = record.get("speed") or {}
    if record.get("skipped"):
        outcome = f"skipped: {record['skipped']}"
    elif record.get("refused"):
        outcome = f"REFUSED: {record['refused']}"
    elif "ms" in speed:
        outcome = f"{speed['ms']:.3g} ms, {speed['throughput']:.4g} {speed['throughput_unit']}"
    elif "throughput" in speed:
        outcome = f"{speed['throughput']:.4g} {speed['throughput_unit']}"
    else:
        outcome = "done"
    label = (record.get("system") or {}).get("label", "")
    path = f"{record['implementation']}/{record['precision']}"
    log.info("  %s %s %s: %s", record["workload"], label, path, outcome[:200])
