"""What does compiling the whole training step buy? Eager vs CUDA graphs vs compiled.

One training step = energy, forces (``create_graph``), the energy+forces loss, the weight
gradients through the double backward, and an Adam step. Variants, on one fixed batch of
3BPA molecules (one shape bucket, so one capture and one compilation):

* ``eager``: the model as it is (e3nn's TorchScript code), ``loss.backward()``;
* ``graphs``: :class:`macelab.speed.train_step.GraphedTrainStep` (eager step replayed from
  a CUDA graph; CUDA only);
* ``compiled``: :class:`macelab.speed.compiled_train.CompiledTrainStep` (``make_fx`` through
  the double backward, Inductor, replayed from a CUDA graph on CUDA).

Each variant starts from the same weights; its loss and gradients on the first step are
compared with the eager step's (relative norm of the difference), and compile time is
recorded. Run: ``python benchmarks/train_compile_probe.py --out DIR [--batch-size 5]``
(``--device cpu --tiny --backend aot_eager`` checks it on a CPU). Writes
``train_compile_probe.json`` and prints a table.

``--trajectory N`` (with ``--dtype float64``) answers a different question: do the variants
*train* the same? Each runs N Adam steps (lr 1e-2) from the same weights on the fixed
batch, and the relative difference of all weights from an eager run's is recorded after
every step; two controls show what rounding-level noise alone does: a second eager run (GPU
atomics are not deterministic) and an eager run whose gradients are perturbed by a relative
1e-13 at each step.
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
sys.path.insert(0, str(ROOT))

from benchmarks.compile_probe import build  # noqa: E402


def labelled_batch(device: str, batch_size: int):
    """``batch_size`` 3BPA frames with energies and forces (AcAc if 3BPA is not present)."""
    import ase.io
    from torch_geometric.data import Batch

    from macelab.data.graph import atoms_to_graph
    from macelab.data.locate import locate

    try:
        path = locate("dataset_3BPA/train_300K.xyz", download=False)
    except Exception:
        path = locate("dataset_acac/train_300K.xyz", download=False)
    frames = ase.io.read(path.path, index=f":{batch_size}")
    graphs = [atoms_to_graph(a, 5.0, read_labels=True) for a in frames]
    return Batch.from_data_list(graphs).to(device), path.path.name


def loss_function():
    from macelab.training.loss import EnergyForcesLoss, LossWeights

    return EnergyForcesLoss(LossWeights(energy=1.0, forces=100.0))


def median_ms(step, device: str, reps: int) -> float:
    """Median ms per step after three warm-up steps."""
    for _ in range(3):
        step()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return float(sorted(times)[len(times) // 2])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--backend", default="inductor", help="aot_eager to check on a CPU")
    parser.add_argument("--variants", default="eager,graphs,compiled")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--trajectory", type=int, default=0, help="N Adam steps per variant")
    args = parser.parse_args(argv)
    if args.trajectory:
        return trajectory_main(args)
    args.out.mkdir(parents=True, exist_ok=True)
    device = args.device
    batch, source = labelled_batch(device, args.batch_size)
    loss_fn = loss_function()
    model = build(args.tiny, True, torch.float32, device).train()
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    parameters = list(model.parameters())

    output = model(batch, compute_forces=True, training=True)
    reference_loss = loss_fn(output, batch)["loss"]
    reference = torch.autograd.grad(reference_loss, parameters, allow_unused=True)
    reference_loss = reference_loss.detach()
    reference = [
        torch.zeros_like(p) if g is None else g for g, p in zip(reference, parameters, strict=True)
    ]
    del output

    records: list[dict[str, Any]] = []
    for variant in args.variants.split(","):
        entry: dict[str, Any] = {"variant": variant}
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(parameters, lr=1e-3, amsgrad=True)
        try:
            step_fn = make_step(variant, model, loss_fn, batch, device, args.backend)
            start = time.perf_counter()
            loss = step_fn()  # first step: capture / trace / compile (not timed)
            if device == "cuda":
                torch.cuda.synchronize()
            entry["first_step_s"] = round(time.perf_counter() - start, 2)
            entry["loss_rel_err"] = rel(loss, reference_loss)
            grads = torch.cat([p.grad.reshape(-1) for p in parameters])
            entry["grad_rel_err"] = rel(grads, torch.cat([g.reshape(-1) for g in reference]))

            def step(step_fn=step_fn, optimizer=optimizer) -> None:
                step_fn()
                optimizer.step()

            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            entry["ms"] = median_ms(step, device, args.reps)
            entry["configurations_per_s"] = args.batch_size / (entry["ms"] * 1e-3)
            if device == "cuda":
                entry["peak_MiB"] = torch.cuda.max_memory_allocated() / 2**20
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
            traceback.print_exc()
        print(json.dumps(entry), flush=True)
        records.append(entry)
        for p in parameters:
            p.grad = None

    info = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "data": source,
        "batch_size": args.batch_size,
        "atoms": int(batch.num_nodes),
        "edges": int(batch.edge_index.shape[1]),
        "model": "tiny" if args.tiny else "paper (256 channels, L<=2, max_ell 3, nu 3)",
        "dtype": "float32",
        "records": records,
    }
    (args.out / "train_compile_probe.json").write_text(json.dumps(info, indent=2))
    print(f"\n{info['model']}, {source} x{args.batch_size}, {info['device']}")
    for r in records:
        line = f"{r['variant']:>10}: "
        if "ms" in r:
            line += f"{r['ms']:8.2f} ms/step  first step {r['first_step_s']:6.1f} s  "
            line += f"loss {r['loss_rel_err']:.1e}  grads {r['grad_rel_err']:.1e}"
        else:
            line += r.get("error", "")[:160]
        print(line)
    return 0


def make_step(variant: str, model, loss_fn, batch, device: str, backend: str):
    """A callable that fills every parameter's ``.grad`` and returns the loss."""
    if variant == "eager":

        def eager() -> torch.Tensor:
            for p in model.parameters():
                p.grad = None
            output = model(batch, compute_forces=True, training=True)
            loss = loss_fn(output, batch)["loss"]
            loss.backward()
            return loss.detach()

        return eager
    if variant == "graphs":
        from macelab.speed.train_step import GraphedTrainStep

        graphed = GraphedTrainStep(model, loss_fn)
        return lambda: graphed(batch)[0]["loss"]
    if variant == "compiled":
        from macelab.speed.compiled_train import CompiledTrainStep

        compiled = CompiledTrainStep(model, loss_fn, backend=backend, cuda_graphs=device == "cuda")
        return lambda: compiled(batch)[0]["loss"]
    raise ValueError(f"unknown variant {variant!r}: eager, graphs or compiled")


def trajectory_main(args: argparse.Namespace) -> int:
    """Weights of N Adam steps per variant against an eager run's (see the docstring)."""
    device, dtype = args.device, getattr(torch, args.dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    batch, source = labelled_batch(device, args.batch_size)
    for key in ("positions", "energy", "forces", "cell", "shifts"):
        if key in batch and torch.is_tensor(batch[key]) and batch[key].is_floating_point():
            batch[key] = batch[key].to(dtype)
    loss_fn = loss_function()
    model = build(args.tiny, True, dtype, device).train()
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    parameters = list(model.parameters())

    def run(variant: str) -> list[torch.Tensor]:
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(parameters, lr=1e-2, amsgrad=True)
        name = "eager" if variant.startswith("eager") else variant
        step_fn = make_step(name, model, loss_fn, batch, device, args.backend)
        generator = torch.Generator(device=device).manual_seed(0)
        weights = []
        for _ in range(args.trajectory):
            step_fn()
            if variant == "eager_noise":
                for p in (p for p in parameters if p.grad is not None):
                    noise = torch.randn(p.shape, generator=generator, device=device, dtype=dtype)
                    p.grad = p.grad * (1 + 1e-13 * noise)
            optimizer.step()
            weights.append(torch.cat([p.detach().reshape(-1).clone() for p in parameters]))
        for p in parameters:
            p.grad = None
        return weights

    reference = run("eager")
    records = []
    for variant in ["eager_repeat", "eager_noise", *args.variants.split(",")]:
        if variant == "eager":
            continue
        entry: dict[str, Any] = {"variant": variant}
        try:
            weights = run(variant)
            entry["weights_rel_diff_per_step"] = [
                rel(w, r) for w, r in zip(weights, reference, strict=True)
            ]
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
            traceback.print_exc()
        print(json.dumps(entry), flush=True)
        records.append(entry)
    info = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "data": source,
        "batch_size": args.batch_size,
        "model": "tiny" if args.tiny else "paper (256 channels, L<=2, max_ell 3, nu 3)",
        "dtype": args.dtype,
        "steps": args.trajectory,
        "records": records,
    }
    (args.out / "train_compile_trajectory.json").write_text(json.dumps(info, indent=2))
    for r in records:
        diffs = r.get("weights_rel_diff_per_step")
        shown = " ".join(f"{d:.1e}" for d in diffs) if diffs else r.get("error", "")[:160]
        print(f"{r['variant']:>13}: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
