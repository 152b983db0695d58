"""AOTInductor packages (``python -m macelab.export format=aoti``) beside the Python paths:
the cost of one energy + forces call of the paper-size model on a device.

For each dtype: a random-weight MACE (128 channels, L = 2, correlation 3, H C N O;
``--tiny``: 16 channels, L = 1) on ``--device``, exported as an AOTInductor package (time
to compile, package size) and loaded (:class:`macelab.aoti.AOTIPotential`); then per system
(a 27-atom molecule, a periodic water box of 192 molecules, 576 atoms; ``--tiny``: 32
molecules) the largest energy and force differences to the eager model and the median
milliseconds per call of

- ``eager_ms``: the eager macelab model (autograd forces);
- ``compiled_ms``: the Python compiled path of ``MACECalculator(accelerate="compiled")``
  (:class:`macelab.speed.compiled.CompiledPotential`: make_fx + Inductor, CUDA graphs on a
  GPU; ``compiled_s`` is its first, compiling call; ``--no-compiled`` skips it);
- ``aoti_ms``: the package, called with the same tensors (no padding, no CUDA graphs).

The neighbour list is built once per system and is not timed. Writes ``aoti.json`` and
``aoti.md`` into ``--out``.

    python -m benchmarks.studies.aoti --device cuda --out DIR          # benchmarks/gpu/aoti.sh
    python -m benchmarks.studies.aoti --tiny --device cpu --dtypes 64 --no-compiled --out DIR
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.settings import Reps
from benchmarks.studies.export_pt2 import DTYPES, build_model, inputs, median_ms, systems
from benchmarks.systems import make_batch
from benchmarks.timing import synchronize


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    from macelab.aoti import AOTIPotential
    from macelab.export import export_aoti
    from macelab.speed.compiled import CompiledPotential

    device = torch.device(args.device)
    reps = Reps(warmup=3, repeat=20, max_seconds=10.0)
    rows = []
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        model = build_model(args.tiny, dtype, device)
        path = Path(tempfile.mkdtemp()) / "model.pt2"
        started = time.perf_counter()
        export_aoti(model, path)
        aoti_compile_s = time.perf_counter() - started
        started = time.perf_counter()
        package = AOTIPotential(path, device, trust_pickle=True)  # our own package
        load_s = time.perf_counter() - started
        compiled = None if args.no_compiled else CompiledPotential(model)
        for system, config in systems(args.tiny).items():
            batch = make_batch([config], model.r_max).to(device)
            tensors = inputs(batch, dtype, device)
            reference = model(batch, compute_forces=True)
            out = package(*tensors)
            row: dict[str, Any] = {
                "dtype": name,
                "system": system,
                "atoms": int(batch.num_nodes),
                "edges": int(batch.edge_index.shape[1]),
                "aoti_compile_s": round(aoti_compile_s, 1),
                "load_s": round(load_s, 1),
                "package_MiB": round(path.stat().st_size / 2**20, 1),
                "max_dE_eV": float((out["energy"] - reference["energy"].detach()).abs().max()),
                "max_dF_eV_per_A": float(
                    (out["forces"] - reference["forces"].detach()).abs().max()
                ),
                "eager_ms": median_ms(model, (batch,), device, reps),
                "compiled_s": "not run",
                "compiled_ms": "not run",
                "aoti_ms": median_ms(package, tensors, device, reps),
            }
            if compiled is not None:
                started = time.perf_counter()
                compiled(batch)
                synchronize(device)
                row["compiled_s"] = round(time.perf_counter() - started, 1)
                row["compiled_ms"] = median_ms(compiled, (batch,), device, reps)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def write(rows: list[dict[str, Any]], out: Path, args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name() if args.device == "cuda" else cpu
    meta = {"device": device, "torch": torch.__version__, "tiny": args.tiny}
    (out / "aoti.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys = list(rows[0])
    lines = [f"AOTInductor package vs Python paths on {device} (torch {torch.__version__})", ""]
    lines += ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "aoti.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="64,32", help="comma-separated: 64, 32")
    parser.add_argument("--tiny", action="store_true", help="a 16-channel model (CPU check)")
    parser.add_argument("--no-compiled", action="store_true", help="skip the Python compiled path")
    parser.add_argument("--out", type=Path, default=Path("aoti_out"))
    args = parser.parse_args(argv)
    write(measure(args), args.out, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
