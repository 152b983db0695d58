"""Where the time of one call goes: kernel launches, GPU busy time and wall time.

``torch.profiler`` records one call (after the timed warm-up). On CUDA the summary counts the
kernels the call launched, the time the GPU spent inside them (the union of their intervals)
and the wall time of the profiled call; ``gpu_busy_fraction`` below one half means the GPU
mostly waits for the host (launch overhead, Python), not for arithmetic. The profiler slows
the host down, so the workload also records the median of unprofiled calls
(``unprofiled_ms``) and the busy time over it (``gpu_busy_fraction_unprofiled``). On CPU only the
operator counts and times are available; the GPU fields are null.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from benchmarks.timing import synchronize

TOP_KERNELS = 10

# Kernel groups, for where the GPU time of a step goes: the first group whose words occur in
# a kernel's name (lower case) takes it.
KERNEL_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fused conv", ("conv_recv", "conv_send", "conv_edge")),
    # contraction_(backward_)kernel: the first form (to 2026-12-06); rows/components/terms since
    (
        "triton contraction",
        (
            *("contraction_kernel", "contraction_backward_kernel"),
            *("rows_kernel", "components_kernel", "terms_kernel"),
        ),
    ),
    ("matmul", ("gemm", "gemv", "xmma", "cutlass", "matmul", "dot_kernel")),
    ("inductor", ("triton_",)),
    ("elementwise", ("elementwise", "unrolled", "fill", "copy")),
    ("reduce, index, scatter", ("reduce", "index", "scatter", "gather", "sort", "scan", "cum")),
)


def kernel_group(name: str) -> str:
    """The group of a CUDA kernel name (see ``KERNEL_GROUPS``); "other" when none matches."""
    lower = name.lower()
    for group, words in KERNEL_GROUPS:
        if any(word in lower for word in words):
            return group
    return "other"


LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def profile_call(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Profile one call of ``fn`` and summarise it (see the module docstring)."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        synchronize(device)
        wall_ms = (time.perf_counter() - start) * 1e3
    events = list(prof.events())
    device_events = [e for e in events if e.device_type == DeviceType.CUDA]
    kernels = [e for e in device_events if not e.name.startswith(("Memcpy", "Memset"))]
    copies = [e for e in device_events if e.name.startswith(("Memcpy", "Memset"))]
    aten_ops = [
        e for e in events if e.device_type == DeviceType.CPU and e.name.startswith("aten::")
    ]
    launches = [e for e in events if e.name in LAUNCH_CALLS]
    summary: dict[str, Any] = {
        "wall_ms": wall_ms,
        "aten_ops": len(aten_ops),
        "kernel_launches": None,
        "kernels": None,
        "memcpy_memset": None,
        "gpu_busy_ms": None,
        "gpu_busy_fraction": None,
        "top_kernels": [],
        "kernel_groups_ms": {},
    }
    if device.type == "cuda":
        busy_ms = _union_us([(e.time_range.start, e.time_range.end) for e in kernels]) / 1e3
        summary.update(
            kernel_launches=len(launches),
            kernels=len(kernels),
            memcpy_memset=len(copies),
            gpu_busy_ms=busy_ms,
            gpu_busy_fraction=busy_ms / wall_ms if wall_ms > 0 else None,
        )
        timed = kernels
        groups: dict[str, float] = defaultdict(float)
        for e in kernels:
            groups[kernel_group(e.name)] += e.time_range.elapsed_us() / 1e3
        summary["kernel_groups_ms"] = dict(sorted(groups.items(), key=lambda item: -item[1]))
    else:
        timed = [e for e in aten_ops if e.cpu_parent is None]
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in timed:
        entry = totals[e.name[:160]]
        entry[0] += 1
        entry[1] += e.time_range.elapsed_us()
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])[:TOP_KERNELS]
    summary["top_kernels"] = [
        {"name": name, "calls": int(calls), "total_us": us} for name, (calls, us) in ranked
    ]
    summary["top_kernels_are"] = "CUDA kernels" if device.type == "cuda" else "top-level CPU ops"
    return summary
