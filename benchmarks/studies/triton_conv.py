"""Eq. 8 alone (channel-wise tensor product + neighbour sum): e3nn's TensorProduct followed by
index_add vs the fused Triton kernels (docs/kernels.md, "Fused convolution").

Sizes are the paper model's two layers (256 channels; first layer 256x0e features, second
256x(0e+1o+2e); harmonics to l = 3; outputs to l = 3) on real neighbour lists (r_max 5 Å): a
batch of 32 molecules (3BPA if $MACELAB_DATA has it, else AcAc) and a 700-molecule water box
(2,100 atoms). For each layer, system, backend and precision (fp32; bf16 inputs for the
fused kernels, which accumulate in float32), three timed modes:

- ``forward``: the sum without autograd;
- ``forces``: the sum, then its derivatives by the features h, the harmonics Y and the
  radial weights R (what energy + forces need: all three depend on positions);
- ``double_backward``: the sum, those derivatives with their graph, then the derivatives
  of a loss on them by h and R (the parameter side of a force loss: training).

Work: the forward's multiply-adds are ``n_edges * C * (entries + outputs)`` per the probed
plan (each CG entry one multiply-add, each output component one more for R); ``forces``
counts 4x (the sum and three partial derivatives, each as costly as the sum) and
``double_backward`` 11x (1 + 3 + 7 partials). Correctness: largest difference of the
forward from a float64 e3nn sum, relative to its largest value.

    python -m benchmarks.studies.triton_conv --device cuda --out DIR
    python -m benchmarks.studies.triton_conv --tiny --device cpu --out DIR   # interpreter check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.settings import Reps
from benchmarks.timing import run_record, time_calls

MODES = {"forward": 1, "forces": 4, "double_backward": 11}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}


def tensor_product(channels: int, max_L: int, max_ell: int) -> torch.nn.Module:
    """An interaction's tensor product: ``channels x (0e..max_L)`` features, harmonics and
    outputs up to ``max_ell``."""
    from macelab.model.irreps import channelwise_tensor_product, hidden_irreps, sh_irreps

    target = hidden_irreps(channels, max_ell)
    return channelwise_tensor_product(hidden_irreps(channels, max_L), sh_irreps(max_ell), target)


def systems(tiny: bool) -> dict[str, torch.Tensor]:
    """Edge lists ``[2, E]`` of the benchmark systems (and their atom counts)."""
    from benchmarks.systems import default_data_root, load_molecules, make_batch, water_box

    molecules = load_molecules(default_data_root(), (1, 6, 7, 8))
    batch = make_batch(molecules.configs[: 2 if tiny else 32], r_max=5.0)
    water = make_batch([water_box(8 if tiny else 700)], r_max=5.0)
    return {
        f"{molecules.name} x{batch.num_graphs}": (batch.edge_index, batch.num_nodes),
        f"water {water.num_nodes} atoms": (water.edge_index, water.num_nodes),
    }


def run_mode(fn, tp, h, y, w, edge_index, mode: str) -> Any:
    sender, receiver = edge_index
    if mode == "forward":
        with torch.no_grad():
            return fn(tp, h, y, w, sender, receiver)
    h, y, w = (t.detach().requires_grad_(True) for t in (h, y, w))
    out = fn(tp, h, y, w, sender, receiver)
    probe = torch.linspace(-1, 1, out.shape[-1], device=out.device, dtype=out.dtype)
    first = torch.autograd.grad((out * probe).sum(), (h, y, w), create_graph=mode != "forces")
    if mode == "forces":
        return first
    loss = sum((g.float() ** 2).sum() for g in first)
    return torch.autograd.grad(loss, (h, w))


def e3nn_sum(tp, h, y, w, sender, receiver):
    """The reference: e3nn's per-edge messages, then index_add over receivers."""
    messages = tp(h[sender], y, w)
    return messages.new_zeros(h.shape[0], messages.shape[1]).index_add(0, receiver, messages)


def fused_sum(tp, h, y, w, sender, receiver):
    """The same sum through the fused Triton kernels."""
    from macelab.kernels.conv_plan import conv_plan
    from macelab.kernels.triton_conv import ConvGraph, fused_neighbour_sum

    graph = ConvGraph.build(sender, receiver, h.shape[0])
    return fused_neighbour_sum(conv_plan(tp), h, y, w, graph)


def measure(layer: str, tp, system: str, edge_index, n_atoms: int, device, reps, precisions,
            backends) -> list[dict[str, Any]]:  # fmt: skip
    from macelab.kernels.conv_plan import conv_plan

    plan = conv_plan(tp)
    n_edges = int(edge_index.shape[1])
    generator = torch.Generator().manual_seed(n_edges)
    inputs64 = [
        torch.randn(n_atoms, tp.irreps_in1.dim, generator=generator, dtype=torch.float64),
        torch.randn(n_edges, tp.irreps_in2.dim, generator=generator, dtype=torch.float64),
        torch.randn(n_edges, tp.weight_numel, generator=generator, dtype=torch.float64) * 0.1,
    ]
    inputs64 = [t.to(device) for t in inputs64]
    edge_index = edge_index.to(device)
    tp.to(device=device, dtype=torch.float64)
    with torch.no_grad():
        reference = e3nn_sum(tp, *inputs64, *edge_index)
    multiply_adds = n_edges * plan.channels * (len(plan.entries) + sum(plan.mid_dims))
    rows = []
    for backend in backends:
        fn = {"e3nn": e3nn_sum, "triton": fused_sum}[backend]
        for precision in precisions:
            if backend == "e3nn" and precision != "fp32":
                continue  # e3nn's reference path runs in the model dtype
            dtype = DTYPES[precision]
            tp.to(dtype=dtype if backend == "e3nn" else torch.float64)
            h, y, w = (t.to(dtype) for t in inputs64)
            for mode, factor in MODES.items():
                row: dict[str, Any] = {
                    "layer": layer, "system": system, "atoms": n_atoms, "edges": n_edges,
                    "backend": backend, "precision": precision, "mode": mode,
                    "multiply_adds": float(multiply_adds * factor),
                }  # fmt: skip
                try:
                    timing = time_calls(
                        lambda _, args=(fn, tp, h, y, w, edge_index, mode): run_mode(*args),
                        device,
                        reps,
                    )
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rows.append({**row, "status": "oom", "ms": None})
                    continue
                if mode == "forward":
                    with torch.no_grad():
                        out = fn(tp, h, y, w, *edge_index).double()
                    row["max_rel_error_vs_fp64"] = float(
                        (out - reference).abs().max() / reference.abs().max()
                    )
                row.update(
                    status="ok",
                    ms=timing.ms,
                    ms_p10=timing.ms_p10,
                    ms_p90=timing.ms_p90,
                    peak_memory_mib=timing.peak_memory_mib,
                    tflop_per_s=2 * row["multiply_adds"] / (timing.ms / 1e3) / 1e12,
                )
                rows.append(row)
                print(f"{layer} {system} {backend} {precision} {mode}: {timing.ms:.3f} ms",
                      flush=True)  # fmt: skip
    return rows


def markdown(record: dict[str, Any]) -> str:
    lines = [
        f"# Fused convolution vs e3nn ({record['device']}, {record['date']})",
        "",
        f"command: `{record['command']}`",
        "",
        "| layer | system | edges | backend | precision | mode | ms | TFLOP/s | peak MiB "
        "| rel. error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        head = [row["layer"], row["system"], str(row["edges"]), row["backend"],
                row["precision"], row["mode"]]  # fmt: skip
        if row["status"] != "ok":
            cells = [row["status"], "", "", ""]
        else:
            peak, error = row["peak_memory_mib"], row.get("max_rel_error_vs_fp64")
            cells = [
                f"{row['ms']:.3f}",
                f"{row['tflop_per_s']:.3g}",
                "" if peak is None else f"{peak:.0f}",
                "" if error is None else f"{error:.1e}",
            ]
        lines.append("| " + " | ".join(head + cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="8 channels, small systems")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--backends", nargs="+", default=["e3nn", "triton"])
    parser.add_argument("--max-seconds", type=float, default=5.0, help="per measurement")
    args = parser.parse_args(argv)

    import macelab  # noqa: F401  (makes e3nn importable first)

    device = torch.device(args.device)
    channels = 8 if args.tiny else 256
    layers = {
        "layer 1 (0e)": tensor_product(channels, 0, 3),
        "layer 2 (0e+1o+2e)": tensor_product(channels, 2, 3),
    }
    reps = Reps(warmup=1 if args.tiny else 3, repeat=3 if args.tiny else 20,
                max_seconds=args.max_seconds)  # fmt: skip
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for system, (edge_index, n_atoms) in systems(args.tiny).items():
        for layer, tp in layers.items():
            rows += measure(layer, tp, system, edge_index, n_atoms, device, reps,
                            args.precisions, args.backends)  # fmt: skip
            # written after every layer, so a run cut off by a time limit keeps its rows
            record = run_record("triton_conv", device, argv, started, channels=channels, rows=rows)
            (args.out / "triton_conv.json").write_text(json.dumps(record, indent=2))
            (args.out / "triton_conv.md").write_text(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
