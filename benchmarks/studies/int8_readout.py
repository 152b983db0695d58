"""INT8 readout ablation: latency and error of the INT8 readout against the float model.

For the paper's model (256 channels, L = 2, nu = 3, elements H C O; random weights, or a
macelab checkpoint with ``--ckpt``) and each device and precision, on a small molecule
(acetylacetone, 15 atoms, shipped with macelab) and a periodic water box (~1000 atoms):

- latency of one energy + forces call (plain eager model calls, median of repetitions),
  float readout vs INT8 readout (:func:`macelab.model.quantized.quantize_readout`);
- latency of the readouts alone (forward on the recorded node features, then the backward
  that forces need), and their share of the float model's call;
- error of the INT8 model against the float model: energy (meV, meV/atom) and forces (RMSE
  and max, meV/Å; and relative to the float forces' RMS).

Writes ``int8_readout.json`` and ``int8_readout.md`` into ``--out``.

    python benchmarks/studies/int8_readout.py --out DIR       # CPU, and CUDA if present
    python benchmarks/studies/int8_readout.py --tiny --devices cpu --out DIR  # CPU check
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import ase
import ase.io
import torch

from benchmarks.settings import Reps
from benchmarks.systems import water_box
from benchmarks.timing import synchronize, time_calls

ELEMENTS = (1, 6, 8)  # H C O: acetylacetone and water
E0S = (-13.6, -1029.0, -2041.0)  # rough isolated-atom energies, eV (random weights)


def build_model(tiny: bool, ckpt: str | None) -> tuple[torch.nn.Module, str]:
    """The float model (float64) and a description of where its weights came from."""
    from macelab.model import MACE
    from macelab.training.checkpoint import load_model

    if ckpt:
        model, _ = load_model(ckpt)
        return model.double().eval(), f"checkpoint {ckpt}"
    size = {"channels": 8, "max_L": 1, "correlation": 2} if tiny else {}
    settings = {"channels": 256, "max_L": 2, "max_ell": 3, "correlation": 3, **size}
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = MACE(
            atomic_numbers=list(ELEMENTS),
            atomic_energies=list(E0S),
            avg_num_neighbors=12.0,
            **settings,
        )
    finally:
        torch.set_default_dtype(previous)
    label = "tiny" if tiny else "paper"
    return model.eval(), f"random weights, {label} size {settings}"


def systems(water_molecules: int) -> dict[str, ase.Atoms]:
    """The small molecule and the water box."""
    from macelab.data.packaged import packaged_path

    acac = ase.io.read(packaged_path("dataset_acac/train_300K.xyz"), index=0)
    config = water_box(water_molecules)
    water = ase.Atoms(config.atomic_numbers, config.positions, cell=config.cell, pbc=True)
    return {"acac": ase.Atoms(acac.numbers, acac.positions), f"water_{len(water)}": water}


def readout_time(
    model: torch.nn.Module, graph: Any, device: torch.device, reps: Reps
) -> tuple[float, Callable[[], None]]:
    """Median ms of the readouts alone (forward and the input-gradient backward) on the node
    features of one call of ``model`` (recorded with forward hooks)."""
    features: list[torch.Tensor] = []
    hooks = [
        readout.register_forward_hook(lambda _m, inputs, _o: features.append(inputs[0].detach()))
        for readout in model.readouts
    ]
    try:
        model(graph, compute_forces=True)
    finally:
        for hook in hooks:
            hook.remove()

    def call(_k: int) -> None:
        inputs = [f.clone().requires_grad_(True) for f in features]
        total = sum(r(x).sum() for r, x in zip(model.readouts, inputs, strict=True))
        torch.autograd.grad(total, inputs)

    return time_calls(call, device, reps).ms


def measure(
    model: torch.nn.Module,
    name: str,
    atoms: ase.Atoms,
    device: str,
    precision: str,
    reps: Reps,
) -> dict[str, Any]:
    """One row: float vs INT8 readout on one system, device and precision."""
    from macelab.data.graph import atoms_to_graph
    from macelab.model.quantized import int8_matmul_backend, quantize_readout
    from macelab.precision.inference import for_inference

    torch_device = torch.device(device)
    float_model, context = for_inference(model, precision, device)
    int8_model, _ = for_inference(quantize_readout(copy.deepcopy(model)), precision, device)
    graph = atoms_to_graph(atoms, float(model.r_max)).to(torch_device)
    graph.batch = torch.zeros(len(atoms), dtype=torch.int64, device=torch_device)
    graph.ptr = torch.tensor([0, len(atoms)], device=torch_device)
    outputs, timings = {}, {}
    with context():
        for label, m in (("float", float_model), ("int8", int8_model)):
            outputs[label] = m(graph, compute_forces=True)
            timings[label] = time_calls(
                lambda _k, m=m: m(graph, compute_forces=True), torch_device, reps
            ).ms
            timings[f"{label}_readout"] = readout_time(m, graph, torch_device, reps)
    synchronize(torch_device)
    f64 = torch.float64
    energy = {k: float(v["energy"].detach().to(f64).sum()) for k, v in outputs.items()}
    forces = {k: v["forces"].detach().to(f64) for k, v in outputs.items()}
    difference = forces["int8"] - forces["float"]
    n = len(atoms)
    return {
        "system": name,
        "atoms": n,
        "edges": int(graph.edge_index.shape[1]),
        "device": device,
        "precision": precision,
        "int8_product": int8_matmul_backend(device),
        "float_ms": timings["float"],
        "int8_ms": timings["int8"],
        "speedup": timings["float"] / timings["int8"],
        "float_readout_ms": timings["float_readout"],
        "int8_readout_ms": timings["int8_readout"],
        "readout_share": timings["float_readout"] / timings["float"],
        "energy_int8_float_meV": 1000.0 * (energy["int8"] - energy["float"]),
        "energy_int8_float_meV_per_atom": 1000.0 * (energy["int8"] - energy["float"]) / n,
        "forces_int8_float_rmse_meV_per_A": 1000.0 * float(difference.pow(2).mean().sqrt()),
        "forces_int8_float_max_meV_per_A": 1000.0 * float(difference.abs().max()),
        "forces_relative_rmse": float(
            difference.pow(2).mean().sqrt() / forces["float"].pow(2).mean().sqrt()
        ),
    }


def markdown(record: dict[str, Any]) -> str:
    """The rows as a markdown table, with the model and machine above it."""
    lines = [
        f"### INT8 readout vs float ({record['date']}, {record['machine']})",
        "",
        f"Model: {record['model']}. Plain eager calls, energy + forces, median of repetitions.",
        "",
        "| system | atoms | device | precision | float ms | int8 ms | speed-up | readout ms "
        "(float / int8) | readout share | ΔE meV | ΔE meV/atom | ΔF RMSE meV/Å | ΔF max meV/Å "
        "| ΔF / F RMS | int8 product |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['system']} | {r['atoms']} | {r['device']} | {r['precision']} | "
            f"{r['float_ms']:.2f} | {r['int8_ms']:.2f} | {r['speedup']:.3f} | "
            f"{r['float_readout_ms']:.3f} / {r['int8_readout_ms']:.3f} | "
            f"{100 * r['readout_share']:.2f}% | {r['energy_int8_float_meV']:.3g} | "
            f"{r['energy_int8_float_meV_per_atom']:.3g} | "
            f"{r['forces_int8_float_rmse_meV_per_A']:.3g} | "
            f"{r['forces_int8_float_max_meV_per_A']:.3g} | {r['forces_relative_rmse']:.2e} | "
            f"{r['int8_product']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny model, small box, few reps")
    parser.add_argument("--ckpt", default=None, help="a macelab checkpoint instead of random")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--precisions", nargs="+", default=["32", "64"])
    parser.add_argument("--water-molecules", type=int, default=None, help="default 333")
    parser.add_argument("--cpu-water-molecules", type=int, default=None, help="CPU box size")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per measurement")
    args = parser.parse_args(argv)

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    water = args.water_molecules or (8 if args.tiny else 333)
    cpu_water = args.cpu_water_molecules or water
    reps = Reps(warmup=1 if args.tiny else 3, repeat=args.repeat or (3 if args.tiny else 20),
                max_seconds=args.max_seconds)  # fmt: skip
    model, source = build_model(args.tiny, args.ckpt)
    rows = []
    started = time.perf_counter()
    for device in devices:
        molecules = water if device == "cuda" else cpu_water
        for name, atoms in systems(molecules).items():
            for precision in args.precisions:
                row = measure(model, name, atoms, device, precision, reps)
                rows.append(row)
                print(
                    f"{name} {device} {precision}: float {row['float_ms']:.2f} ms, int8 "
                    f"{row['int8_ms']:.2f} ms, readout {100 * row['readout_share']:.2f}%, "
                    f"dE {row['energy_int8_float_meV']:.3g} meV, dF RMSE "
                    f"{row['forces_int8_float_rmse_meV_per_A']:.3g} meV/Å",
                    flush=True,
                )
    gpu = torch.cuda.get_device_name(0) if "cuda" in devices else None
    record = {
        "date": date.today().isoformat(),
        "machine": gpu or f"{platform.processor() or platform.machine()} CPU",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": source,
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_readout.json").write_text(json.dumps(record, indent=2))
    (args.out / "int8_readout.md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
