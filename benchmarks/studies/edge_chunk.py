"""Memory and time of energy + forces with ``model.edge_chunk`` (messages in chunks of edges
under activation checkpointing) against all edges at once.

The paper's model (256 channels, L <= 2, max_ell 3, nu = 3, fixed random weights, float32)
on periodic water boxes at 1 g/cm^3. For each box size and chunk setting: median ms of one
energy + forces call and peak memory: on CUDA ``max_memory_allocated`` (in one process,
allocator cache emptied between settings); on a CPU the peak resident set of a fresh
process per setting minus that process's resident set after building the model and the box
(so the model and the box are not counted). A setting that runs out of memory is recorded
as such. Writes ``edge_chunk.json`` and ``edge_chunk.md``.

    python -m benchmarks.studies.edge_chunk --out DIR --molecules 1000 3300 6700 --chunks 0 20000 \
        --backends e3nn triton
    python -m benchmarks.studies.edge_chunk --out DIR --device cpu --molecules 50 --chunks 0 1000
    python -m benchmarks.studies.edge_chunk --out DIR --molecules 1000 3300 6700 --chunks 0 \
        --backends triton+conv e3nn+conv      # the fused convolution (no chunking)

``--backends`` names the contraction backend (``model.backend``; the convolution stays
e3nn's, which is what chunking applies to), with ``+conv`` the fused Triton convolution.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.settings import Reps
from benchmarks.systems import make_batch, water_box
from benchmarks.timing import time_calls

MiB = 2**20


def build(tiny: bool, script: bool, dtype: torch.dtype, device: str) -> torch.nn.Module:
    """The paper's model (or a tiny one) with fixed random weights."""
    import e3nn

    from macelab.model import MACE

    size = dict(channels=16, max_L=1, correlation=2) if tiny else dict(channels=256, max_L=2)
    previous = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_script_fx=script)
    torch.manual_seed(0)
    try:
        model = MACE(
            atomic_numbers=[1, 6, 7, 8],
            atomic_energies=[-13.6, -1029.0, -1485.0, -2041.0],
            avg_num_neighbors=12.0,
            max_ell=3,
            **size,
        )
    finally:
        e3nn.set_optimization_defaults(**previous)
    return model.to(device=device, dtype=dtype)


def _rss_mib() -> float:
    """This process's current resident set (Linux /proc), MiB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / MiB


def measure(
    molecules: int, chunk: int, backend: str, device: str, reps: int, tiny: bool
) -> dict[str, Any]:
    """One (box, chunk, backend) setting: edges, ms, peak MiB (see the module docstring)."""
    from macelab.kernels import set_backend

    model = build(tiny, True, torch.float32, device).eval().requires_grad_(False)
    # "<contraction backend>[+conv]": +conv adds the fused convolution, which keeps no
    # per-edge messages (edge_chunk does not apply to it: run it with --chunks 0)
    contraction, _, conv = backend.partition("+")
    set_backend(model, contraction, convolution=conv == "conv")
    model.set_edge_chunk(chunk or None)
    batch = make_batch([water_box(molecules)], 5.0).to(device)
    row: dict[str, Any] = {"molecules": molecules, "atoms": int(batch.num_nodes)}
    row.update(edges=int(batch.edge_index.shape[1]), edge_chunk=chunk or None, backend=backend)
    baseline = _rss_mib()
    try:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
        timing = time_calls(
            lambda _: model(batch, compute_forces=True),
            torch.device(device),
            Reps(warmup=1, repeat=reps, max_seconds=10.0),
        )
        row["ms"] = timing.ms
        row["atoms_per_s"] = row["atoms"] / (timing.ms * 1e-3)
        if device == "cuda":
            row["peak_MiB"] = (torch.cuda.max_memory_allocated() - start) / MiB
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
            row["peak_MiB"] = peak - baseline
    except RuntimeError as error:  # OutOfMemoryError, or one raised inside TorchScript
        if "out of memory" not in str(error):
            raise
        row["error"] = "out of memory: " + str(error).split("CUDA out of memory.")[-1][:200]

    return row


def _cpu_name() -> str:
    """The CPU's model name (Linux), else the machine type."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def markdown(record: dict[str, Any]) -> str:
    lines = [
        f"device: {record['device']}; torch {record['torch']}; {record['date']}",
        "",
        "| atoms | edges | backend | edge_chunk | ms | atoms/s | peak MiB | MiB per 1k edges |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in record["rows"]:
        if "error" in r:
            lines.append(
                f"| {r['atoms']} | {r['edges']} | {r['backend']} | {r['edge_chunk'] or 'all'} | "
                f"{r['error'][:40]} | | | |"
            )
            continue
        per_edge = 1e3 * r["peak_MiB"] / r["edges"]
        lines.append(
            f"| {r['atoms']} | {r['edges']} | {r['backend']} | {r['edge_chunk'] or 'all'} | "
            f"{r['ms']:.1f} | "
            f"{r['atoms_per_s']:.0f} | {r['peak_MiB']:.0f} | {per_edge:.1f} |"
        )
    return "\n".join(lines) + "\n"


def setting(args: argparse.Namespace, molecules: int, chunk: int, backend: str) -> dict:
    """One measured row: in this process on CUDA, in a fresh one on a CPU."""
    if args.device == "cuda":
        row = measure(molecules, chunk, backend, "cuda", args.reps, args.tiny)
    else:
        command = [sys.executable, "-m", "benchmarks.studies.edge_chunk", "--child"]
        command += ["--out", str(args.out), "--molecules", str(molecules)]
        command += ["--chunks", str(chunk), "--reps", str(args.reps), "--backends", backend]
        command += ["--tiny"] if args.tiny else []
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        row = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--molecules", type=int, nargs="+", default=[1000])
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 20000], help="0: all")
    parser.add_argument("--backends", nargs="+", default=["e3nn"], help="model.backend[+conv]")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a tiny model (CI)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one CPU setting in a fresh process: its peak RSS is this setting's
        row = measure(
            args.molecules[0], args.chunks[0], args.backends[0], "cpu", args.reps, args.tiny
        )
        print(json.dumps(row))
        return 0
    rows = []
    for molecules in args.molecules:
        for backend in args.backends:
            for chunk in args.chunks:
                rows.append(setting(args, molecules, chunk, backend))
    record = {
        "benchmark": "edge_chunk",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else _cpu_name(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m benchmarks.studies.edge_chunk "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edge_chunk.json").write_text(json.dumps(record, indent=2))
    (args.out / "edge_chunk.md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
