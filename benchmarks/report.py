"""The record: one JSON object per workload x implementation x precision, and its tables.

Every record has the fields in :data:`RECORD_FIELDS`. ``speed`` is null when the path was
refused (its errors against float64 exceed its precision's bound: ``refused`` says so) or not
run (``skipped`` says why); the table then shows REFUSED or SKIPPED instead of a number.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.profiling import KERNEL_GROUPS

RECORD_FIELDS = (
    "workload",
    "implementation",
    "precision",
    "runtime",  # the macelab path's runtime plan (conf/runtime fields); null for mace-torch
    "system",
    "correctness",
    "flops",
    "speed",
    "profile",
    "refused",
    "skipped",
    "setup_s",
    "versions",
    "device",
    "date",
    "command",
)
SPEED_FIELDS = (
    "ms",
    "ms_p10",
    "ms_p90",
    "repetitions",
    "throughput",
    "throughput_unit",
    "peak_memory_MiB",
    "reserved_memory_MiB",
    "achieved_tflops",
    "achieved_GBps",
    "ceiling_tflops",
    "ceiling_GBps",
    "floor_ms",
    "fraction_of_ceiling",
    "bound_by",
)
CORRECTNESS_FIELDS = (
    "reference",
    "energy_rel_err",
    "forces_rel_err",
    "energy_rel_err_total",
    "bound",
    "passed",
    "checked_on",
)
# record key -> (distribution, module): the imported module's __version__ wins, so that the
# record names what ran even where two copies are installed (the GPU machine's own e3nn and
# the carried 0.4.4 that mace-torch pins).
DISTRIBUTIONS = {
    "torch": ("torch", "torch"),
    "e3nn": ("e3nn", "e3nn"),
    "mace-torch": ("mace-torch", "mace"),
    "cuequivariance": ("cuequivariance", "cuequivariance"),
    "cuequivariance-torch": ("cuequivariance-torch", "cuequivariance_torch"),
    "cuequivariance-ops-torch-cu13": ("cuequivariance-ops-torch-cu13", None),
    "torch-geometric": ("torch_geometric", "torch_geometric"),
    "numpy": ("numpy", "numpy"),
    "ase": ("ase", "ase"),
    "vesin": ("vesin", "vesin"),
}


def _version(distribution: str, module: str | None) -> str | None:
    loaded = sys.modules.get(module) if module else None
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The checkout's commit (+dirty), or ``$MACELAB_COMMIT`` where there is no git (the GPU
    machine gets a copy of the working tree)."""
    if os.environ.get("MACELAB_COMMIT"):
        return os.environ["MACELAB_COMMIT"]
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def versions() -> dict[str, Any]:
    """Versions of Python, the libraries compared, and macelab (with its git commit)."""
    import macelab

    found: dict[str, Any] = {"python": platform.python_version()}
    for key, (distribution, module) in DISTRIBUTIONS.items():
        found[key] = _version(distribution, module)
    found["cuda"] = torch.version.cuda
    found["macelab"] = macelab.__version__
    found["macelab_commit"] = _git_commit()
    return found


def device_info(device: torch.device) -> dict[str, Any]:
    """The device's name, compute capability and memory (CPU: processor and cores)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {
            "type": "cuda",
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_MiB": props.total_memory / 2**20,
            "multiprocessors": props.multi_processor_count,
        }
    return {
        "type": "cpu",
        "name": platform.processor() or platform.machine(),
        "capability": None,
        "threads": torch.get_num_threads(),
    }


def meta(device: torch.device, argv: list[str]) -> dict[str, Any]:
    """Fields every record repeats: versions, device, date, command."""
    return {
        "versions": versions(),
        "device": device_info(device),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], *argv]),
    }


def run_meta(script: str, argv: list[str] | None, device: str) -> dict[str, Any]:
    """The fields a training-run benchmark's record starts with (ablations, budgets):
    device name, date, versions, the command that wrote it and the commit."""
    return {
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "CPU",
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"torch": torch.__version__},
        "command": " ".join([f"python benchmarks/{script}", *(argv or sys.argv[1:])]),
        "commit": os.environ.get("MACELAB_COMMIT"),
    }


def new_record(
    workload: str, implementation: str, precision: str, system: dict[str, Any], common: dict
) -> dict[str, Any]:
    """A record with every field present (unset ones null)."""
    record: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
    record.update(workload=workload, implementation=implementation, precision=precision)
    record["system"] = system
    record.update(common)
    return record


def write_json(records: list[dict[str, Any]], path: Path) -> None:
    """``results.json``: the list of records (NaN/inf written as null)."""
    path.write_text(json.dumps(_finite(records), indent=1, sort_keys=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _memory(speed: dict) -> str:
    """Peak allocated over the timed calls, and what the allocator holds (CUDA-graph pools
    included); "-" on CPU."""
    peak, reserved = speed.get("peak_memory_MiB"), speed.get("reserved_memory_MiB")
    return _fmt(peak) if reserved is None else f"{_fmt(peak)} / {_fmt(reserved)}"


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def _status(record: dict[str, Any]) -> str | None:
    if record.get("refused"):
        return f"REFUSED ({record['refused']})"
    if record.get("skipped"):
        return f"SKIPPED ({record['skipped']})"
    return None


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _system(record: dict[str, Any]) -> str:
    system = record.get("system") or {}
    return str(system.get("label", ""))


def main_table(records: list[dict[str, Any]]) -> list[str]:
    """Timed workloads: one row per workload x path."""
    rows = []
    timed = ("train_step", "infer_small", "infer_large")
    for r in records:
        if r["workload"] not in timed:
            continue
        c = r.get("correctness") or {}
        s = r.get("speed") or {}
        status = _status(r)
        path = f"{r['implementation']}/{r['precision']}"
        errors = [_fmt(c.get("energy_rel_err"), 2), _fmt(c.get("forces_rel_err"), 2)]
        if status:
            rows.append([r["workload"], _system(r), path, status, "", "", "", *errors, "", ""])
            continue
        rows.append(
            [
                r["workload"],
                _system(r),
                path,
                _fmt(s.get("ms")),
                f"{_fmt(s.get('throughput'))} {s.get('throughput_unit', '')}",
                _memory(s),
                _fmt(r.get("setup_s"), 2),
                *errors,
                _fmt(s.get("achieved_tflops")),
                _fmt(s.get("fraction_of_ceiling")),
            ]
        )
    header = [
        "workload",
        "system",
        "path",
        "ms (median)",
        "throughput",
        "peak / reserved MiB",
        "setup s",
        "E rel err",
        "F rel err",
        "TFLOP/s",
        "floor/ms",
    ]
    return _table(header, rows)


def scaling_table(records: list[dict[str, Any]]) -> list[str]:
    """Scaling sweep: one row per system size, ms and peak MiB per path."""
    scaling = [
        r for r in records if r["workload"] == "scaling" and (r["system"] or {}).get("n_atoms")
    ]
    if not scaling:
        return []
    paths = list(dict.fromkeys(f"{r['implementation']}/{r['precision']}" for r in scaling))
    sizes = sorted({(r["system"] or {}).get("n_atoms", 0) for r in scaling})
    rows = []
    for n in sizes:
        row = [str(n)]
        for p in paths:
            match = [
                r
                for r in scaling
                if f"{r['implementation']}/{r['precision']}" == p
                and (r["system"] or {}).get("n_atoms") == n
            ]
            if not match:
                row.append("")
            elif _status(match[0]):
                row.append("REFUSED" if match[0].get("refused") else "SKIPPED")
            else:
                s = match[0]["speed"]
                row.append(f"{_fmt(s['ms'])} ms, {_fmt(s.get('peak_memory_MiB'))} MiB")
        rows.append(row)
    return _table(["atoms", *paths], rows)


def profile_table(records: list[dict[str, Any]]) -> list[str]:
    """Profiles: kernels, GPU busy time and wall time per path."""
    rows = []
    for r in records:
        if not r["workload"].startswith("profile"):
            continue
        status = _status(r)
        path = f"{r['implementation']}/{r['precision']}"
        if status:
            rows.append([r["workload"], path, status, "", "", "", "", "", ""])
            continue
        p = r["profile"]
        top = p["top_kernels"][0]["name"][:60] if p["top_kernels"] else ""
        rows.append(
            [
                r["workload"],
                path,
                _fmt(p.get("unprofiled_ms")),
                _fmt(p["wall_ms"]),
                str(p["aten_ops"]),
                str(p["kernels"]) if p["kernels"] is not None else "-",
                _fmt(p["gpu_busy_ms"]),
                _fmt(p.get("gpu_busy_fraction_unprofiled")),
                top,
            ]
        )
    if not rows:
        return []
    header = [
        "profile",
        "path",
        "ms",
        "ms profiled",
        "aten ops",
        "kernels",
        "GPU busy ms",
        "busy / ms",
        "top kernel",
    ]
    return _table(header, rows)


def profile_groups_table(records: list[dict[str, Any]]) -> list[str]:
    """Profiles: GPU milliseconds per kernel group (benchmarks.profiling.KERNEL_GROUPS)."""
    profiled = [
        r
        for r in records
        if r["workload"].startswith("profile") and (r.get("profile") or {}).get("kernel_groups_ms")
    ]
    if not profiled:
        return []
    groups = [group for group, _ in KERNEL_GROUPS] + ["other"]
    rows = []
    for r in profiled:
        p = r["profile"]
        ms = p["kernel_groups_ms"]
        total = sum(ms.values())
        row = [r["workload"], f"{r['implementation']}/{r['precision']}", _fmt(total)]
        row += [f"{_fmt(ms[g])} ({ms[g] / total:.0%})" if ms.get(g) else "-" for g in groups]
        rows.append(row)
    return _table(["profile", "path", "kernel ms", *groups], rows)


def ceiling_table(records: list[dict[str, Any]]) -> list[str]:
    """The device's measured matrix and copy ceilings."""
    rows = []
    for r in records:
        if r["workload"] != "ceiling":
            continue
        s = r.get("speed") or {}
        value = _status(r) or f"{_fmt(s.get('throughput'))} {s.get('throughput_unit', '')}"
        rows.append([r["precision"], (r["system"] or {}).get("label", ""), value])
    return _table(["ceiling", "measured on", "value"], rows) if rows else []


def markdown(records: list[dict[str, Any]], title: str) -> str:
    """``results.md``: ceilings, profiles, scaling, then the main table last."""
    common = records[0] if records else {}
    versions = common.get("versions") or {}
    device = common.get("device") or {}
    lines = [
        f"## {title}",
        "",
        f"- device: {device.get('name')} (capability {device.get('capability')})",
        f"- date: {common.get('date')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- command: `{common.get('command')}`",
        "",
    ]
    for name, table in (
        ("Ceilings", ceiling_table(records)),
        ("Profiles", profile_table(records)),
        ("GPU time by kernel group", profile_groups_table(records)),
        ("Scaling (water, inference energy+forces)", scaling_table(records)),
        ("Main table", main_table(records)),
    ):
        if table:
            lines += [f"### {name}", "", *table, ""]
    lines.append(
        "floor/ms: the roofline floor (count / measured matrix ceiling, bytes / measured copy "
        "bandwidth, the larger) over the measured time; E/F rel err: against float64 macelab "
        "(energies without the isolated-atom sum)."
    )
    return "\n".join(lines) + "\n"
