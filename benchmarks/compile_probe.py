"""Can kernel fusion take MACE below the launch floor? Eager vs CUDA graphs vs compiled.

The CUDA-graph path (``macelab.speed``) removed launch overhead, leaving ~3,000 kernels
per energy+forces call. This probe measures what fusing them buys, one molecule and one
training step, each variant checked against the float64 eager model:

* ``eager``: the model as it is (e3nn's TorchScript code);
* ``graphs``: ``GraphedPotential`` / ``GraphedTrainStep``;
* ``compiled``: the energy and its force backward traced into one aten graph by
  ``make_fx`` (``torch.autograd.grad`` included, so forces are in the graph), then compiled
  by Inductor (fused Triton kernels), on a model built without TorchScript;
* ``compiled+graphs``: the compiled callable replayed from a CUDA graph.

Run: ``python benchmarks/compile_probe.py --out DIR [--device cpu --tiny]``. Writes
``compile_probe.json`` and prints a table; failures are recorded with their error.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


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


def molecule(device: str, batch_size: int = 1):
    """3BPA (27 atoms) frames from the shared data if present, else packaged AcAc."""
    import ase.io
    from torch_geometric.data import Batch

    from macelab.data.graph import atoms_to_graph
    from macelab.data.locate import locate

    try:
        path = locate("dataset_3BPA/train_300K.xyz", download=False)
    except Exception:
        path = locate("dataset_acac/train_300K.xyz", download=False)
    frames = ase.io.read(path.path, index=f":{batch_size}")
    return Batch.from_data_list([atoms_to_graph(a, 5.0) for a in frames]).to(device)


def fields(graph: Any, dtype: torch.dtype) -> dict[str, Any]:
    return {
        "positions": graph.positions.to(dtype),
        "atomic_numbers": graph.atomic_numbers,
        "edge_index": graph.edge_index,
        "unit_shifts": graph.unit_shifts.to(dtype),
        "cell": graph.cell.to(dtype).reshape(-1, 3, 3),
        "batch": graph.batch,
        "ptr": graph.ptr,
    }


def traced_energy_forces(model: torch.nn.Module, inputs: dict[str, Any]):
    """``(positions) -> (energy, forces)`` as one aten graph (make_fx through autograd)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    static = {k: v for k, v in inputs.items() if k != "positions"}
    model.elements.check(inputs["atomic_numbers"])
    model.elements.check_inputs = False  # a traced graph cannot read the device

    def energy_forces(positions: torch.Tensor):
        out = model({**static, "positions": positions}, compute_forces=True)
        return out["energy"], out["forces"]

    return make_fx(energy_forces)(inputs["positions"])


def timed(fn, device: str, reps: int) -> float:
    """Median ms per call after three warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return times[len(times) // 2]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument(
        "--backend", default="inductor", help="torch.compile backend (aot_eager to check on CPU)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device, dtype = args.device, torch.float32
    graph = molecule(device)
    reference = build(args.tiny, True, torch.float64, device)
    ref = reference(fields(graph, torch.float64), compute_forces=True)
    records: list[dict[str, Any]] = []

    def record(name: str, fn) -> None:
        entry: dict[str, Any] = {"variant": name}
        try:
            energy, forces = fn()
            entry["energy_rel_err"] = rel(energy, ref["energy"])
            entry["forces_rel_err"] = rel(forces, ref["forces"])
            entry["ms"] = timed(fn, device, args.reps)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
            traceback.print_exc()
        print(json.dumps(entry), flush=True)
        records.append(entry)

    scripted = build(args.tiny, True, dtype, device)
    inputs = fields(graph, dtype)

    def eager():
        out = scripted(inputs, compute_forces=True)
        return out["energy"], out["forces"]

    record("eager", eager)
    if device == "cuda":
        from macelab.speed.cuda_graphs import GraphedPotential

        graphed = GraphedPotential(scripted)

        def graphs():
            out = graphed(graph)
            return out["energy"], out["forces"]

        record("graphs", graphs)
    plain = build(args.tiny, False, dtype, device).requires_grad_(False)  # inference
    compiled: dict[str, Any] = {}

    def compiled_call():
        # The traced graph holds the force backward as plain aten ops: it runs without
        # autograd (no_grad), so AOTAutograd does not try to differentiate it again.
        if "fn" not in compiled:
            start = time.perf_counter()
            traced = traced_energy_forces(plain, inputs)
            compiled["nodes"] = len(traced.graph.nodes)
            fn = torch.compile(traced, backend=args.backend, dynamic=False, fullgraph=True)
            with torch.no_grad():
                fn(inputs["positions"])
            compiled["compile_s"] = time.perf_counter() - start
            compiled["fn"] = fn
        with torch.no_grad():
            return compiled["fn"](inputs["positions"])

    record("compiled", compiled_call)
    records[-1].update({k: v for k, v in compiled.items() if k != "fn"})
    if device == "cuda" and "fn" in compiled:
        captured: dict[str, Any] = {}

        def compiled_graphs():
            if "graph" not in captured:
                static = inputs["positions"].clone()
                cuda_graph = torch.cuda.CUDAGraph()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.no_grad(), torch.cuda.stream(side):
                    for _ in range(3):
                        compiled["fn"](static)
                torch.cuda.current_stream().wait_stream(side)
                with torch.no_grad(), torch.cuda.graph(cuda_graph):
                    captured["outputs"] = compiled["fn"](static)
                captured.update(graph=cuda_graph, static=static)
            captured["static"].copy_(inputs["positions"])
            captured["graph"].replay()
            return captured["outputs"]

        record("compiled+graphs", compiled_graphs)
    info = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "atoms": int(graph.num_nodes),
        "edges": int(graph.edge_index.shape[1]),
        "model": "tiny" if args.tiny else "paper (256x0e+256x1o+256x2e, max_ell 3, nu 3)",
        "dtype": str(dtype),
        "records": records,
    }
    (args.out / "compile_probe.json").write_text(json.dumps(info, indent=2))
    for r in records:
        line = f"{r['variant']:>16}: "
        line += f"{r['ms']:.3f} ms" if "ms" in r else r.get("error", "")[:120]
        if "forces_rel_err" in r:
            line += f"   E {r['energy_rel_err']:.1e}  F {r['forces_rel_err']:.1e}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
