"""The ``pt2`` export (:mod:`macelab.export`) of the paper-size model on a device: time to
export and to load, agreement with the Python model, and the cost of one energy + forces call.

For each dtype: a random-weight MACE (128 channels, L = 2, correlation 3, H C N O; ``--tiny``:
16 channels, L = 1) is exported on ``--device`` with dynamic sizes, saved, loaded back with
``torch.export.load`` and run on a 27-atom molecule (synthetic, 3BPA's composition) and a
periodic water box (192 molecules, 576 atoms; ``--tiny``: 32 molecules). Per system: the
largest energy and force differences to the eager macelab model, and the median call time
of the eager model, of the loaded program, and of the loaded program under
``torch.compile`` (Inductor; its first call compiles). Writes ``export_pt2.json`` and
``export_pt2.md`` into ``--out``.

    python -m benchmarks.studies.export_pt2 --device cuda --out DIR
    python -m benchmarks.studies.export_pt2 --tiny --device cpu --dtypes 64 --out DIR   # CPU check
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
from benchmarks.systems import make_batch, synthetic_molecule, water_box
from benchmarks.timing import synchronize, time_calls

ELEMENTS = [1, 6, 7, 8]
E0S = [-13.6, -1029.0, -1485.0, -2041.0]
DTYPES = {"64": torch.float64, "32": torch.float32}


def build_model(tiny: bool, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    from macelab.model import MACE
    from macelab.precision import default_dtype

    size = {"channels": 16, "max_L": 1} if tiny else {"channels": 128, "max_L": 2}
    torch.manual_seed(0)
    with default_dtype(dtype):
        model = MACE(
            atomic_numbers=ELEMENTS,
            atomic_energies=E0S,
            avg_num_neighbors=10.0,
            correlation=3,
            r_max=5.0,
            **size,
        )
    return model.to(device).eval()


def systems(tiny: bool) -> dict[str, Any]:
    waters = 32 if tiny else 192
    return {"molecule_27": synthetic_molecule(27), f"water_{3 * waters}": water_box(waters)}


def inputs(batch: Any, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    tensors = (
        batch.positions.to(dtype),
        batch.atomic_numbers,
        batch.edge_index,
        batch.unit_shifts.to(dtype),
        batch.cell.reshape(-1, 3, 3).to(dtype),
        batch.batch,
    )
    return tuple(t.to(device) for t in tensors)


def median_ms(function: Any, arguments: tuple, device: torch.device, reps: Reps) -> float:
    """Median milliseconds of ``function(*arguments)`` (forces included: the eager model's
    default, the program's only mode)."""
    return time_calls(lambda _: function(*arguments), device, reps).ms


def compile_and_time(
    compiled: Any, tensors: tuple, device: torch.device, reps: Reps
) -> tuple[float | str, float | str]:
    """Seconds of the first (compiling) call and median ms after it; where Inductor fails
    on this device and dtype, both cells say so (the first line of the error) instead of
    ending the benchmark."""
    started = time.perf_counter()
    try:
        compiled(*tensors)
    except Exception as error:
        reason = f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:80]}"
        return reason, reason
    synchronize(device)
    compile_s = round(time.perf_counter() - started, 1)
    return compile_s, median_ms(compiled, tensors, device, reps)


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    from macelab.export import export_pt2

    device = torch.device(args.device)
    reps = Reps(warmup=3, repeat=20, max_seconds=10.0)
    rows = []
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        model = build_model(args.tiny, dtype, device)
        path = Path(tempfile.mkdtemp()) / "model.pt2"
        started = time.perf_counter()
        export_pt2(model, path)
        export_s = time.perf_counter() - started
        started = time.perf_counter()
        program = torch.export.load(str(path)).module()
        load_s = time.perf_counter() - started
        compiled = None if args.no_compile else torch.compile(program)
        for system, config in systems(args.tiny).items():
            batch = make_batch([config], model.r_max).to(device)
            tensors = inputs(batch, dtype, device)
            reference = model(batch, compute_forces=True)
            energy, forces = program(*tensors)
            compile_s, compiled_ms = "not run", "not run"
            if compiled is not None:
                compile_s, compiled_ms = compile_and_time(compiled, tensors, device, reps)
            row = {
                "dtype": name,
                "system": system,
                "atoms": int(batch.num_nodes),
                "edges": int(batch.edge_index.shape[1]),
                "export_s": round(export_s, 1),
                "load_s": round(load_s, 1),
                "file_MiB": round(path.stat().st_size / 2**20, 1),
                "max_dE_eV": float((energy - reference["energy"]).abs().max()),
                "max_dF_eV_per_A": float((forces - reference["forces"]).abs().max()),
                "eager_ms": median_ms(model, (batch,), device, reps),
                "pt2_ms": median_ms(program, tensors, device, reps),
                "pt2_compile_s": compile_s,
                "pt2_compiled_ms": compiled_ms,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def write(rows: list[dict[str, Any]], out: Path, args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name() if args.device == "cuda" else cpu
    meta = {"device": device, "torch": torch.__version__, "tiny": args.tiny}
    (out / "export_pt2.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys = list(rows[0])
    lines = [f"pt2 export on {device} (torch {torch.__version__})", ""]
    lines += ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "export_pt2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="64,32", help="comma-separated: 64, 32")
    parser.add_argument("--tiny", action="store_true", help="a 16-channel model (CPU check)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--out", type=Path, default=Path("export_pt2_out"))
    args = parser.parse_args(argv)
    write(measure(args), args.out, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
