"""The whole model with each contraction backend (``model.backend``): e3nn vs triton.

The paper's model (256 channels, L <= 2, max_ell 3, nu = 3, random weights, float32), on
three workloads: one 3BPA molecule (27 atoms), a batch of 32 of them (864 atoms) and a
periodic water box (1,000 molecules, 3,000 atoms). For each backend:

* ``inference``: energy and forces with frozen weights, as the calculator and MD run it,
  eager and (``--graphs``, CUDA) replayed from CUDA graphs (``GraphedPotential``);
* ``train``: one training step (energy + forces with ``create_graph``, an energy+forces
  loss, its weight gradients through the double backward), eager, on the 864-atom batch.

Each prediction is checked against the e3nn backend's (largest force difference relative
to the largest force). Writes ``model_backends.json`` and ``model_backends.md``.

    python -m benchmarks.model_backends --out DIR --graphs
    TRITON_INTERPRET=1 python -m benchmarks.model_backends --out DIR --tiny --device cpu
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.compile_probe import build
from benchmarks.settings import Reps
from benchmarks.systems import make_batch, synthetic_molecule, water_box
from benchmarks.timing import time_calls


def workloads(tiny: bool, device: str) -> dict[str, Any]:
    """name -> batch on ``device``."""
    if tiny:
        molecules = [synthetic_molecule(8, seed=i) for i in range(2)]
        return {
            "molecule x1": make_batch(molecules[:1], 5.0).to(device),
            "molecule x2": make_batch(molecules, 5.0).to(device),
        }
    molecules = [synthetic_molecule(27, seed=i) for i in range(32)]
    return {
        "3BPA-size molecule x1 (27 atoms)": make_batch(molecules[:1], 5.0).to(device),
        "3BPA-size molecule x32 (864 atoms)": make_batch(molecules, 5.0).to(device),
        "water, 3,000 atoms (periodic)": make_batch([water_box(1000)], 5.0).to(device),
    }


def median_ms(fn, device: str, reps: int, max_seconds: float) -> float:
    """Median ms of ``fn()`` (the shared harness timing: warm-up, synchronised repeats)."""
    timing = time_calls(lambda _: fn(), torch.device(device),
                        Reps(warmup=3, repeat=reps, max_seconds=max_seconds))  # fmt: skip
    return float(timing.ms)


def train_step(model, batch) -> None:
    """Energy, forces with their graph, a force loss, the weight gradients."""
    model.zero_grad(set_to_none=True)
    output = model(batch, compute_forces=True, training=True)
    loss = output["energy"].square().mean() + 100 * output["forces"].square().mean()
    loss.backward()


def main(argv: list[str] | None = None) -> int:
    from macelab.kernels import set_backend

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--backends", nargs="+", default=["e3nn", "triton"])
    parser.add_argument("--graphs", action="store_true", help="also CUDA-graphed inference")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--max-seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv)
    device = args.device
    base = build(args.tiny, True, torch.float32, device)
    systems = workloads(args.tiny, device)
    train_batch = list(systems.values())[1]
    rows: list[dict[str, Any]] = []
    reference: dict[str, torch.Tensor] = {}
    for backend in args.backends:
        model = set_backend(copy.deepcopy(base), backend)
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        for name, batch in systems.items():
            variants = {"eager": lambda b=batch, m=frozen: m(b, compute_forces=True)}
            if args.graphs and device == "cuda":
                from macelab.speed.cuda_graphs import GraphedPotential

                variants["graphs"] = GraphedPotential(frozen).__call__
            for variant, call in variants.items():
                row: dict[str, Any] = {"backend": backend, "workload": name}
                row.update({"mode": "inference", "variant": variant})
                row["atoms"] = int(batch.num_nodes)
                try:
                    forces = call(batch)["forces"].detach()
                    if backend == args.backends[0] and variant == "eager":
                        reference[name] = forces
                    expected = reference.get(name)
                    if expected is not None:
                        error = (forces - expected).abs().max() / expected.abs().max()
                        row["forces_rel_err_vs_first_backend"] = float(error)
                    row["ms"] = median_ms(lambda c=call, b=batch: c(b), device, args.reps,
                                          args.max_seconds)  # fmt: skip
                    row["atoms_per_s"] = row["atoms"] / (row["ms"] * 1e-3)
                except Exception as error:  # recorded, not fatal: the other rows still run
                    row["error"] = f"{type(error).__name__}: {error}"[:300]
                print(json.dumps(row), flush=True)
                rows.append(row)
        row = {"backend": backend, "workload": list(systems)[1], "mode": "train"}
        row.update({"variant": "eager", "atoms": int(train_batch.num_nodes)})
        try:
            model.train()
            row["ms"] = median_ms(lambda m=model: train_step(m, train_batch), device,
                                  args.reps, args.max_seconds)  # fmt: skip
        except Exception as error:
            row["error"] = f"{type(error).__name__}: {error}"[:300]
        print(json.dumps(row), flush=True)
        rows.append(row)
        del model, frozen
        if device == "cuda":
            torch.cuda.empty_cache()
    import triton

    record = {
        "benchmark": "model_backends",
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "model": "tiny" if args.tiny else "paper (256 channels, L<=2, max_ell 3, nu 3), float32",
        "command": "python -m benchmarks.model_backends "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_backends.json").write_text(json.dumps(record, indent=2))
    (args.out / "model_backends.md").write_text(markdown(record))
    print(markdown(record))
    return 0


def markdown(record: dict[str, Any]) -> str:
    lines = [
        f"# Model with each contraction backend ({record['device']}, {record['date']})",
        "",
        f"{record['model']}; torch {record['torch']}, triton {record['triton']}; "
        f"`{record['command']}`",
        "",
        "| workload | mode | variant | backend | ms | atoms/s | forces rel. err. | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        ms = f"{r['ms']:.2f}" if "ms" in r else "—"
        rate = f"{r['atoms_per_s']:,.0f}" if "atoms_per_s" in r else "—"
        err = r.get("forces_rel_err_vs_first_backend")
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['variant']} | {r['backend']} | {ms} | "
            f"{rate} | {'—' if err is None else f'{err:.1e}'} | {r.get('error', '')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
