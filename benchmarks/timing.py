"""Timing and memory on the device, and the device's measured ceilings (METHOD.md).

Every timed call is bracketed by ``torch.cuda.synchronize`` and read off a host clock, so a
number is the latency a caller sees (launch and host overhead included, which is the point
for small systems). Warm-up calls come first; the median of the repetitions is reported.
Peak memory is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, over
the timed calls (weights, optimiser state and batch included). A CUDA graph's private pool
is not "allocated" during replays, so graphed paths also record ``memory_reserved`` at the
end (allocator cache emptied before the warm-up): what the path holds, pools included. On
CPU neither is measured; both are null.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import torch

from benchmarks.settings import Reps

MiB = 2**20


@dataclass
class Timing:
    """Median and spread (ms) of the timed calls, and the peak device memory (MiB)."""

    ms: float
    ms_p10: float
    ms_p90: float
    repetitions: int
    peak_memory_mib: float | None
    # what the caching allocator holds at the end (private CUDA-graph pools included, which
    # the peak above does not count once captured); cache emptied before the warm-up
    reserved_memory_mib: float | None = None


def synchronize(device: torch.device) -> None:
    """Wait for the device (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def time_calls(fn: Callable[[int], Any], device: torch.device, reps: Reps) -> Timing:
    """Time ``fn(k)`` (k counts calls, to rotate batches): warm-up, then repetitions.

    Repetitions stop early once ``reps.max_seconds`` have passed and at least three ran.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()  # reserved memory below: this path's, not a predecessor's
    for k in range(reps.warmup):
        fn(k)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    started = time.perf_counter()
    for k in range(reps.repeat):
        synchronize(device)
        t0 = time.perf_counter()
        fn(reps.warmup + k)
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 3 and time.perf_counter() - started > reps.max_seconds:
            break
    peak = torch.cuda.max_memory_allocated(device) / MiB if device.type == "cuda" else None
    reserved = torch.cuda.memory_reserved(device) / MiB if device.type == "cuda" else None
    return Timing(
        ms=statistics.median(times),
        ms_p10=_quantile(times, 0.1),
        ms_p90=_quantile(times, 0.9),
        repetitions=len(times),
        peak_memory_mib=peak,
        reserved_memory_mib=reserved,
    )


def _event_median_ms(
    fn: Callable[[], Any], device: torch.device, warmup: int, repeat: int
) -> float:
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type != "cuda":
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


MATMUL_MODES: dict[str, tuple[torch.dtype, str]] = {
    "fp64": (torch.float64, "highest"),
    "fp32": (torch.float32, "highest"),
    "tf32": (torch.float32, "high"),
    "fp16": (torch.float16, "highest"),
    "bf16": (torch.bfloat16, "highest"),
}


def matmul_tflops(mode: str, n: int, device: torch.device) -> float:
    """Measured TFLOP/s of an n x n x n matrix product in ``mode`` (random operands)."""
    dtype, matmul_precision = MATMUL_MODES[mode]
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=generator).to(dtype)
    b = torch.randn(n, n, device=device, generator=generator).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(matmul_precision)
    try:
        ms = _event_median_ms(lambda: torch.matmul(a, b, out=out), device, 3, 10)
    finally:
        torch.set_float32_matmul_precision(previous)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def copy_GBps(size_MiB: int, device: torch.device) -> float:
    """Measured device-to-device copy bandwidth, bytes read plus bytes written (GB/s)."""
    n = size_MiB * MiB // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    ms = _event_median_ms(lambda: dst.copy_(src), device, 3, 10)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def run_record(
    benchmark: str, device: torch.device, argv: list[str] | None, started: float, **fields: Any
) -> dict[str, Any]:
    """The header of a kernel benchmark's JSON record: name, date, device, torch, the command
    that reproduces it (``argv``: None for this process's), seconds since ``started``, and
    ``fields`` (settings and rows)."""
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU"
    )
    arguments = sys.argv[1:] if argv is None else argv
    return {
        "benchmark": benchmark,
        "date": date.today().isoformat(),
        "device": name,
        "torch": torch.__version__,
        "command": f"python -m benchmarks.{benchmark} " + " ".join(arguments),
        "seconds": time.perf_counter() - started,
        **fields,
    }
