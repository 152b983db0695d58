"""The symmetric contraction (Eq. 10-11) alone: e3nn (dense einsum) vs sparse_torch vs the
fused Triton kernel (docs/kernels.md).

The paper's contraction: 256 channels, A with max_ell 3 (K = 16), outputs L <= 2,
correlation 3, 4 elements; n atoms 27 * 32 (a training batch of 3BPA) and 3000. For each
backend, precision (fp32, bf16: module and A in that dtype; CG coefficients stay float32)
and size, three timed modes:

- ``forward``: ``m = contraction(A, onehot)`` without autograd;
- ``forces``: forward, then ``dE/dA`` of ``E = sum(m * probe)`` alone (frozen weights, as
  the calculator runs: what inference forces need);
- ``backward``: forward, then ``dE/dA`` and ``dE/dW`` (an energy-only loss's gradient);
- ``double_backward``: forward, ``dE/dA`` with its graph, then ``d/dW`` of
  ``E + sum((dE/dA)^2)`` (a force loss: what training does).

Work counts (the same for every backend, from the sparse CG terms): the useful
multiply-adds of the forward are ``n * C * sum_q nu_q`` (``nu_q - 1`` products per monomial
and one multiply-add into the output); ``backward`` counts 3x and ``double_backward`` 6x the
forward, ``forces`` 2x (the usual convention: each derivative pass costs about two
forwards, one per input differentiated). FLOP = 2 x
multiply-add. Bytes moved are the compulsory traffic: A, the element tables T, the output
(and their gradients) read or written once per pass, in the benchmarked dtype (T in
float32). Correctness: the largest difference from a float64 e3nn forward, relative to its
largest output. Out-of-memory runs are recorded as such.

Writes ``triton_contraction.json`` and ``triton_contraction.md`` into ``--out``.

    python -m benchmarks.studies.triton_contraction --device cuda --out DIR
    python -m benchmarks.studies.triton_contraction --tiny --device cpu --out DIR  # CPU check
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.settings import Reps
from benchmarks.timing import run_record, time_calls

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}
# x the forward multiply-adds
MODE_WORK = {"forward": 1, "forces": 2, "backward": 3, "double_backward": 6}
PAPER = {"channels": 256, "max_ell": 3, "max_L": 2, "correlation": 3, "num_elements": 4}
# --tiny (the CPU check, in Triton's interpreter too): A with max_ell 1 (K = 4: 27 terms
# against 110 with max_ell 2, whose interpreted kernels took minutes); correlation 3 kept.
TINY = {"channels": 8, "max_ell": 1, "max_L": 1, "correlation": 3, "num_elements": 4}


def build(size: dict[str, int], seed: int = 0) -> torch.nn.Module:
    """The symmetric contraction of one MACE layer, in float64 (cast per run)."""
    from e3nn import o3

    from macelab.model.symmetric_contraction import SymmetricContraction

    C = size["channels"]
    irreps_in = o3.Irreps([(C, (ell, (-1) ** ell)) for ell in range(size["max_ell"] + 1)])
    irreps_out = o3.Irreps([(C, (L, (-1) ** L)) for L in range(size["max_L"] + 1)])
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return SymmetricContraction(
            irreps_in, irreps_out, size["correlation"], size["num_elements"]
        )
    finally:
        torch.set_default_dtype(previous)


def inputs(module: torch.nn.Module, num_atoms: int, device: torch.device):
    first = module.contractions[0]
    generator = torch.Generator().manual_seed(num_atoms)
    features = torch.randn(
        num_atoms, first.channels, first.num_components, generator=generator, dtype=torch.float64
    )
    num_elements = first.weights["1"].shape[0]
    elements = torch.randint(0, num_elements, (num_atoms,), generator=generator)
    node_attrs = torch.nn.functional.one_hot(elements, num_elements).double()
    return features.to(device), node_attrs.to(device)


def step(module, features, node_attrs, mode: str):
    """One call of ``mode`` (see the module docstring)."""
    if mode == "forward":
        with torch.no_grad():
            return module(features, node_attrs)
    features = features.detach().requires_grad_(True)
    if mode == "forces":  # frozen weights: only dE/dA is computed
        module.requires_grad_(False)
        try:
            out = module(features, node_attrs)
            return torch.autograd.grad((out * _probe(out)).sum(), features)
        finally:
            module.requires_grad_(True)
    out = module(features, node_attrs)
    energy = (out * _probe(out)).sum()
    params = [p for p in module.parameters() if p.requires_grad]
    if mode == "backward":
        return torch.autograd.grad(energy, [features, *params])
    (d_features,) = torch.autograd.grad(energy, features, create_graph=True)
    loss = energy + (d_features.float() ** 2).sum()
    return torch.autograd.grad(loss, params)


def _probe(out: torch.Tensor) -> torch.Tensor:
    return torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype, device=out.device)


def work(module, num_atoms: int, dtype: torch.dtype) -> dict[str, float]:
    """Forward multiply-adds and compulsory bytes of one forward."""
    from macelab.kernels import sparse_contraction

    sparse = sparse_contraction(module)
    first = module.contractions[0]
    C, K, E = first.channels, first.num_components, first.weights["1"].shape[0]
    element = torch.finfo(dtype).bits // 8
    return {
        "terms": sparse.num_terms,
        "cg_entries": int(sparse.entry_term.numel()),
        "multiply_adds": float(num_atoms * C * sparse.multiply_adds_per_atom_channel()),
        "bytes": float(
            num_atoms * (C * K + sparse.out_dim) * element + E * sparse.num_terms * C * 4
        ),
    }


def measure(
    module, backend: str, precision: str, num_atoms: int, device: torch.device, reps: Reps
) -> list[dict[str, Any]]:
    from macelab.kernels import set_backend

    dtype = DTYPES[precision]
    features, node_attrs = inputs(module, num_atoms, device)
    set_backend(module, "e3nn")
    module.to(device=device, dtype=torch.float64)
    with torch.no_grad():
        reference = module(features, node_attrs)
    module.to(dtype)
    set_backend(module, backend)
    features, node_attrs = features.to(dtype), node_attrs.to(dtype)
    counts = work(module, num_atoms, dtype)
    rows = []
    for mode, factor in MODE_WORK.items():
        row: dict[str, Any] = {
            "backend": backend,
            "precision": precision,
            "atoms": num_atoms,
            "mode": mode,
            **counts,
        }
        row["multiply_adds"] = counts["multiply_adds"] * factor
        row["bytes"] = counts["bytes"] * (1 if mode == "forward" else 2 * factor / 3)
        try:
            call = functools.partial(step, module, features, node_attrs, mode)
            timing = time_calls(lambda _, call=call: call(), device, reps)
            if mode == "forward":
                with torch.no_grad():
                    out = module(features, node_attrs).double()
                error = (out - reference).abs().max() / reference.abs().max()
                row["max_rel_error_vs_fp64"] = float(error)
        except torch.OutOfMemoryError:
            row.update({"status": "oom", "ms": None})
            torch.cuda.empty_cache()
            rows.append(row)
            continue
        seconds = timing.ms / 1e3
        row.update(
            {
                "status": "ok",
                "ms": timing.ms,
                "ms_p10": timing.ms_p10,
                "ms_p90": timing.ms_p90,
                "peak_memory_mib": timing.peak_memory_mib,
                "tflop_per_s": 2 * row["multiply_adds"] / seconds / 1e12,
                "gb_per_s": row["bytes"] / seconds / 1e9,
            }
        )
        rows.append(row)
    return rows


def markdown(record: dict[str, Any]) -> str:
    lines = [
        f"# Symmetric contraction backends ({record['device']}, {record['date']})",
        "",
        f"Contraction: {record['size']}; command: `{record['command']}`",
        "",
        "| backend | precision | atoms | mode | ms | TFLOP/s | GB/s | peak MiB | rel. error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        if row["status"] != "ok":
            cells = [row["status"]] + [""] * 4
        else:
            peak = row["peak_memory_mib"]
            error = row.get("max_rel_error_vs_fp64")
            cells = [
                f"{row['ms']:.3f}",
                f"{row['tflop_per_s']:.3g}",
                f"{row['gb_per_s']:.3g}",
                "" if peak is None else f"{peak:.0f}",
                "" if error is None else f"{error:.1e}",
            ]
        head = [row["backend"], row["precision"], str(row["atoms"]), row["mode"]]
        lines.append("| " + " | ".join(head + cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from macelab.kernels.triton_contraction import triton_available

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="8 channels, l <= 1, L <= 1, few atoms")
    parser.add_argument("--backends", nargs="+", default=None, help="default: all that run")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--atoms", nargs="+", type=int, default=None, help="default 864 3000")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None, help="default 3, 1 with --tiny")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="per measurement")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    size = TINY if args.tiny else PAPER
    atoms = args.atoms or ([10, 40] if args.tiny else [27 * 32, 3000])
    backends = args.backends or ["e3nn", "sparse_torch"]
    if args.backends is None and triton_available() is None:
        backends.append("triton")
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    reps = Reps(warmup=warmup, repeat=args.repeat or (3 if args.tiny else 20),
                max_seconds=args.max_seconds)  # fmt: skip
    module = build(size)
    rows = []
    started = time.perf_counter()
    for num_atoms in atoms:
        for precision in args.precisions:
            for backend in backends:
                for row in measure(module, backend, precision, num_atoms, device, reps):
                    rows.append(row)
                    ms = "oom" if row["ms"] is None else f"{row['ms']:.3f} ms"
                    print(f"{backend} {precision} n={num_atoms} {row['mode']}: {ms}")
    record = run_record("triton_contraction", device, argv, started, size=size, rows=rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "triton_contraction.json").write_text(json.dumps(record, indent=2))
    (args.out / "triton_contraction.md").write_text(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
