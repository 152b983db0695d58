"""The workloads, each run for every path after that path passed its correctness check.

===================  =========================================================================
``ceilings``         measured matmul TFLOP/s (fp64, fp32, tf32, fp16, bf16) and copy GB/s
``train_b5``         training step (energy, forces with create_graph, loss, backward, Adam
                     step) on 5 3BPA molecules, rotating among several batches
``infer_small``      energy+forces latency of one 27-atom molecule (MD use)
``train_b32``        the training step on 32 molecules
``infer_large``      energy+forces of a periodic box of liquid water (2100 atoms), atoms/s
``profile``          torch.profiler of one training step (batch 5) and one small inference
``scaling``          water boxes from 100 to 20000 atoms: time and peak memory per size
===================  =========================================================================

Before a path is timed on a workload it is compared with the float64 reference on the same
batch; a path over its precision's bound is recorded as refused, with its errors, and never
timed. Large systems are checked on a small box of the same water (the float64 reference on
thousands of atoms would need more memory than the workload itself).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch

from benchmarks import flops as flop_count
from benchmarks.implementations import COMPILED, GRAPHED, Path
from benchmarks.measure import (
    Context,
    Reference,
    bytes_per_value,
    check,
    guarded,
    lazy_reference,
    refusal,
    speed_fields,
)
from benchmarks.profiling import profile_call
from benchmarks.report import new_record
from benchmarks.settings import Reps
from benchmarks.systems import describe, make_batch, water_box
from benchmarks.timing import MATMUL_MODES, copy_GBps, matmul_tflops, synchronize, time_calls

log = logging.getLogger("benchmarks")

ENERGY_WEIGHT = 1.0
FORCES_WEIGHT = 100.0


def _to_device(batches: list[Batch], device: torch.device) -> list[Batch]:
    return [b.to(device) for b in batches]


def molecule_batches(ctx: Context, batch_size: int, count: int) -> list[Batch]:
    """``count`` disjoint batches of ``batch_size`` molecules (seeded choice)."""
    configs = ctx.molecules.configs
    order = np.random.default_rng(batch_size).permutation(len(configs))
    needed = batch_size * count
    picks = [configs[order[k % len(order)]] for k in range(needed)]
    r_max = ctx.settings.model.r_max
    return [make_batch(picks[k : k + batch_size], r_max) for k in range(0, needed, batch_size)]


def _system_fields(label: str, batches: list[Batch], source: str) -> dict[str, Any]:
    first = describe(batches[0])
    return {
        "label": label,
        **first,
        "mean_edges": float(np.mean([b.edge_index.shape[1] for b in batches])),
        "rotating_batches": len(batches),
        "source": source,
    }


def _flops(ctx: Context, batches: list[Batch], kind: str, path: Path) -> dict[str, Any]:
    nodes = float(np.mean([b.num_nodes for b in batches]))
    edges = float(np.mean([b.edge_index.shape[1] for b in batches]))
    count = flop_count.forward_count(ctx.mace_reference, nodes, edges)
    return flop_count.summary(count, kind, bytes_per_value(path))


def loss_fn(
    energy: torch.Tensor,
    forces: torch.Tensor,
    e_ref: torch.Tensor,
    f_ref: torch.Tensor,
    n_atoms: torch.Tensor,
) -> torch.Tensor:
    """Weighted energy-per-atom and force MSE (mace-torch's weighted loss, fixed weights)."""
    energy = energy.float() if energy.dtype != torch.float64 else energy
    forces = forces.float() if forces.dtype != torch.float64 else forces
    e_term = torch.mean(((energy - e_ref.to(energy.dtype)) / n_atoms) ** 2)
    f_term = torch.mean((forces - f_ref.to(forces.dtype)) ** 2)
    return ENERGY_WEIGHT * e_term + FORCES_WEIGHT * f_term


# --- workloads ---------------------------------------------------------------------------


def ceilings(ctx: Context) -> None:
    """Matrix-product TFLOP/s per precision and device-to-device copy GB/s."""
    n = ctx.settings.ceiling_matmul_n
    for mode in MATMUL_MODES:
        record = new_record("ceiling", "torch", mode, {"label": f"{n}^3 matmul"}, ctx.common)

        def body(mode: str = mode, record: dict = record) -> None:
            value = matmul_tflops(mode, n, ctx.device)
            ctx.ceilings[mode] = value
            record["speed"] = {"throughput": value, "throughput_unit": "TFLOP/s"}

        guarded(ctx, record, None, body)
    size = ctx.settings.ceiling_copy_mib
    record = new_record("ceiling", "torch", "copy", {"label": f"{size} MiB copy"}, ctx.common)

    def copy_body() -> None:
        value = copy_GBps(size, ctx.device)
        ctx.ceilings["copy"] = value
        record["speed"] = {"throughput": value, "throughput_unit": "GB/s (read+write)"}

    guarded(ctx, record, None, copy_body)


@contextlib.contextmanager
def training(
    path: Path, inputs: list[Any], batches: list[Batch], device: torch.device
) -> Iterator[Callable[[int], None]]:
    """A training step function on the path's own model; the weights are put back after.

    Restoring a copy of the state (instead of training a deep copy of the model) works for
    every implementation, including cuEquivariance modules that do not deep-copy cheaply.
    """
    model = path.ensure_model()
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    scaler = torch.amp.GradScaler(device.type) if path.spec.grad_scaler else None
    labels = [
        (b.energy.reshape(-1), b.forces, torch.bincount(b.batch).to(b.forces.dtype))
        for b in batches
    ]
    graphed = None
    if path.implementation in (*GRAPHED, *COMPILED):
        from macelab.speed.compiled_train import CompiledTrainStep
        from macelab.speed.train_step import GraphedTrainStep
        from macelab.training.loss import EnergyForcesLoss, LossWeights

        # The same loss as loss_fn below, on label masks so that padding does not count.
        loss = EnergyForcesLoss(LossWeights(energy=ENERGY_WEIGHT, forces=FORCES_WEIGHT))
        if path.implementation in GRAPHED:
            graphed = GraphedTrainStep(model.train(), loss)
        else:  # traced through the double backward, Inductor, CUDA graphs
            graphed = CompiledTrainStep(model.train(), loss, cuda_graphs=device.type == "cuda")

    def step(k: int) -> None:
        i = k % len(inputs)
        if graphed is not None:
            with path.graph_context()():
                _, output = graphed(inputs[i])
            step.last = (output["energy"], output["forces"])  # type: ignore[attr-defined]
            optimizer.step()
            return
        optimizer.zero_grad(set_to_none=True)
        energy, forces = path.forward(inputs[i], training=True)
        loss = loss_fn(energy, forces, *labels[i])
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    try:
        yield step
    finally:
        optimizer.state.clear()
        with torch.no_grad():
            model.load_state_dict(saved)
        for parameter in model.parameters():
            parameter.grad = None


def train_step(ctx: Context, batch_size: int) -> None:
    """Training step on ``batch_size`` molecules, rotating among several batches."""
    s = ctx.settings
    batches = _to_device(molecule_batches(ctx, batch_size, s.num_rotating_batches), ctx.device)
    workload = f"train_b{batch_size}"
    ref = lazy_reference(ctx, workload, batches[0])
    system = _system_fields(f"{ctx.molecules.name} x{batch_size}", batches, ctx.molecules.source)
    for path in ctx.paths:
        record = new_record("train_step", "", "", system, ctx.common)

        def body(path: Path = path, record: dict = record) -> None:
            inputs = [path.prepare(b) for b in batches]
            compiled = path.implementation in COMPILED
            flops = _flops(ctx, batches, "training", path)
            record["flops"] = flops
            with training(path, inputs, batches, ctx.device) as step:
                if compiled:  # the compiled step's own predictions, before its first update
                    started = time.perf_counter()
                    step(0)
                    record["compile_s"] = round(time.perf_counter() - started, 1)
                    energy, forces = step.last
                else:
                    energy, forces = path.forward(inputs[0], training=True)
                record["correctness"] = check(path, energy, forces, ref(), system["label"])
                del energy, forces
                if not record["correctness"]["passed"]:
                    record["refused"] = refusal(record["correctness"])
                    return
                timing = time_calls(step, ctx.device, s.train_reps)
            rate = batch_size / (timing.ms * 1e-3)
            record["speed"] = speed_fields(ctx, path, timing, rate, "configurations/s", flops)

        guarded(ctx, record, path, body)


def _infer(
    ctx: Context,
    workload: str,
    batches: list[Batch],
    check_batch: Batch,
    check_key: str,
    system: dict[str, Any],
    reps: Reps,
    unit: str,
    paths: list[Path] | None = None,
) -> None:
    ref = lazy_reference(ctx, check_key, check_batch)
    for path in paths if paths is not None else ctx.paths:
        record = new_record(workload, "", "", system, ctx.common)

        def body(path: Path = path, record: dict = record) -> None:
            reference = ref()
            with peak_memory(ctx.device) as used:
                energy, forces = path.forward(path.prepare(check_batch), training=False)
            record["correctness"] = check(path, energy, forces, reference, check_key)
            del energy, forces
            flops = _flops(ctx, batches, "inference", path)
            record["flops"] = flops
            if not record["correctness"]["passed"]:
                record["refused"] = refusal(record["correctness"])
                return
            if check_batch is not batches[0]:
                too_big = exceeds_memory(ctx, used, check_batch, batches[0])
                if too_big:
                    record["skipped"] = too_big
                    return
            inputs = [path.prepare(b) for b in batches]

            def call(k: int) -> None:
                path.forward(inputs[k % len(inputs)], training=False)

            timing = time_calls(call, ctx.device, reps)
            per_call = batches[0].num_nodes if unit == "atoms/s" else batches[0].num_graphs
            record["speed"] = speed_fields(
                ctx, path, timing, per_call / (timing.ms * 1e-3), unit, flops
            )

        guarded(ctx, record, path, body)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Device memory in MiB before the block (``base``) and its peak above that (``peak``)."""
    used: dict[str, float] = {}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        used["base"] = torch.cuda.memory_allocated(device) / 2**20
    yield used
    if device.type == "cuda":
        synchronize(device)
        used["peak"] = torch.cuda.max_memory_allocated(device) / 2**20 - used["base"]


def exceeds_memory(ctx: Context, used: dict[str, float], small: Batch, large: Batch) -> str | None:
    """Why ``large`` would not fit, predicted linearly in edges from a run on ``small``."""
    if "peak" not in used:
        return None
    total = torch.cuda.get_device_properties(ctx.device).total_memory / 2**20
    ratio = large.edge_index.shape[1] / max(1, small.edge_index.shape[1])
    predicted = used["base"] + used["peak"] * ratio
    if predicted <= ctx.settings.memory_headroom * total:
        return None
    return (
        f"predicted peak {predicted:.0f} MiB (linear in edges from {small.num_nodes} atoms) "
        f"exceeds {ctx.settings.memory_headroom:.0%} of {total:.0f} MiB"
    )


def infer_small(ctx: Context) -> None:
    """Energy+forces latency of one small molecule, rotating among several molecules."""
    s = ctx.settings
    batches = _to_device(molecule_batches(ctx, 1, s.num_rotating_batches), ctx.device)
    system = _system_fields(f"{ctx.molecules.name} x1", batches, ctx.molecules.source)
    _infer(
        ctx,
        "infer_small",
        batches,
        batches[0],
        system["label"],
        system,
        s.infer_small_reps,
        "structures/s",
    )


def check_water(ctx: Context) -> Batch:
    """The small water box every large-system path is checked on."""
    config = water_box(ctx.settings.check_water_molecules, seed=1)
    return make_batch([config], ctx.settings.model.r_max).to(ctx.device)


def check_water_key(ctx: Context) -> str:
    """The float64 reference's cache key of :func:`check_water`."""
    return f"water {3 * ctx.settings.check_water_molecules} atoms"


def large_water(ctx: Context) -> tuple[list[Batch], dict[str, Any]]:
    """The large water box of ``infer_large`` and ``profile_large``, and its system fields."""
    config = water_box(ctx.settings.water_molecules, seed=0)
    batches = [make_batch([config], ctx.settings.model.r_max).to(ctx.device)]
    label = f"water {batches[0].num_nodes} atoms (pbc, 1 g/cm^3)"
    return batches, _system_fields(label, batches, config.source)


def infer_large(ctx: Context) -> None:
    """Energy+forces throughput (atoms/s) on a periodic box of liquid water."""
    batches, system = large_water(ctx)
    reps = ctx.settings.infer_large_reps
    _infer(
        ctx, "infer_large", batches, check_water(ctx), check_water_key(ctx), system, reps, "atoms/s"
    )


def profiles(ctx: Context) -> None:
    """torch.profiler of one training step (batch 5), one small-molecule inference and one
    inference on the large water box (``profile_large_paths`` only: the e3nn paths need
    40 GB there)."""
    s = ctx.settings
    train_batches = _to_device(molecule_batches(ctx, s.train_batch_sizes[0], 2), ctx.device)
    small = _to_device(molecule_batches(ctx, 1, 1), ctx.device)
    name = ctx.molecules.name
    source = ctx.molecules.source
    train_label, small_label = f"{name} x{s.train_batch_sizes[0]}", f"{name} x1"
    # (workload, batches, training?, system, batch checked against float64, its key, paths)
    cases = [
        (
            "profile_train",
            train_batches,
            True,
            _system_fields(train_label, train_batches, source),
            train_batches[0],
            "profile_train",
            s.profile_paths,
        ),
        (
            "profile_infer",
            small,
            False,
            _system_fields(small_label, small, source),
            small[0],
            "profile_infer",
            s.profile_paths,
        ),
    ]
    if any(p.name in s.profile_large_paths for p in ctx.paths):
        large, large_system = large_water(ctx)
        cases.append(
            (
                "profile_large",
                large,
                False,
                large_system,
                check_water(ctx),
                check_water_key(ctx),
                s.profile_large_paths,
            )
        )
    for workload, batches, is_training, system, check_batch, key, names in cases:
        ref = lazy_reference(ctx, key, check_batch)
        for path in [p for p in ctx.paths if p.name in names]:
            record = new_record(workload, "", "", system, ctx.common)

            def body(
                path: Path = path,
                record: dict = record,
                batches: list = batches,
                is_training: bool = is_training,
                ref: Callable[[], Reference] = ref,
                check_batch: Batch = check_batch,
                key: str = key,
            ) -> None:
                inputs = [path.prepare(b) for b in batches]
                with contextlib.ExitStack() as stack:
                    if is_training:
                        step = stack.enter_context(training(path, inputs, batches, ctx.device))
                    else:

                        def step(k: int) -> None:
                            path.forward(inputs[k % len(inputs)], training=False)

                    if is_training and path.implementation in COMPILED:
                        step(0)  # checked on the compiled step's own first predictions
                        energy, forces = step.last
                    else:
                        energy, forces = path.forward(
                            path.prepare(check_batch), training=is_training
                        )
                    record["correctness"] = check(path, energy, forces, ref(), key)
                    del energy, forces
                    if not record["correctness"]["passed"]:
                        record["refused"] = refusal(record["correctness"])
                        return
                    unprofiled = time_calls(step, ctx.device, s.profile_reps)
                    summary = profile_call(lambda: step(s.profile_reps.warmup + 1), ctx.device)
                    summary["unprofiled_ms"] = unprofiled.ms
                    busy = summary["gpu_busy_ms"]
                    summary["gpu_busy_fraction_unprofiled"] = (
                        busy / unprofiled.ms if busy is not None else None
                    )
                    record["profile"] = summary

            guarded(ctx, record, path, body)


def scaling(ctx: Context) -> None:
    """Time and peak memory of inference on water boxes of growing size, per path."""
    s = ctx.settings
    wanted = [p for p in ctx.paths if p.name in s.scaling_paths]
    check_batch = check_water(ctx)
    key = check_water_key(ctx)
    ref = lazy_reference(ctx, key, check_batch)
    graphs: dict[int, Batch] = {}
    total_MiB = (
        torch.cuda.get_device_properties(ctx.device).total_memory / 2**20
        if ctx.device.type == "cuda"
        else None
    )
    checked: dict[str, dict[str, Any]] = {}
    for path in wanted:
        stop_reason: str | None = None
        last: tuple[int, float] | None = None
        for atoms in s.scaling_atoms:
            molecules = max(1, round(atoms / 3))
            if molecules not in graphs:
                graphs[molecules] = make_batch([water_box(molecules, seed=2)], s.model.r_max)
            batch = graphs[molecules]
            system = _system_fields(f"water {batch.num_nodes} atoms", [batch], "water_box")
            record = new_record("scaling", "", "", system, ctx.common)
            if stop_reason is None and last is not None and total_MiB is not None:
                predicted = last[1] * batch.num_nodes / last[0]
                if predicted > s.memory_headroom * total_MiB:
                    stop_reason = (
                        f"predicted peak {predicted:.0f} MiB (linear from {last[0]} atoms) "
                        f"exceeds {s.memory_headroom:.0%} of {total_MiB:.0f} MiB"
                    )
            if stop_reason is not None:
                record.update(
                    implementation=path.implementation,
                    precision=path.spec.name,
                    skipped=stop_reason,
                )
                ctx.records.append(record)
                continue

            def body(path: Path = path, record: dict = record, batch: Batch = batch) -> None:
                if path.name not in checked:
                    energy, forces = path.forward(path.prepare(check_batch), training=False)
                    checked[path.name] = check(path, energy, forces, ref(), key)
                    del energy, forces
                record["correctness"] = checked[path.name]
                flops = _flops(ctx, [batch], "inference", path)
                record["flops"] = flops
                if not record["correctness"]["passed"]:
                    record["refused"] = refusal(record["correctness"])
                    return
                inputs = path.prepare(batch.to(ctx.device))
                timing = time_calls(
                    lambda k: path.forward(inputs, training=False), ctx.device, s.scaling_reps
                )
                record["speed"] = speed_fields(
                    ctx, path, timing, batch.num_nodes / (timing.ms * 1e-3), "atoms/s", flops
                )

            guarded(ctx, record, path, body)
            if record.get("skipped") or record.get("refused"):
                stop_reason = f"not run: smaller system ({system['n_atoms']} atoms) " + (
                    "refused" if record.get("refused") else f"skipped: {record['skipped']}"
                )
            elif record["speed"] and record["speed"]["peak_memory_MiB"] is not None:
                last = (batch.num_nodes, record["speed"]["peak_memory_MiB"])
        synchronize(ctx.device)


WORKLOADS: dict[str, Callable[[Context], None]] = {
    "ceilings": ceilings,
    "train_b5": lambda ctx: train_step(ctx, ctx.settings.train_batch_sizes[0]),
    "infer_small": infer_small,
    "train_b32": lambda ctx: train_step(ctx, ctx.settings.train_batch_sizes[1]),
    "infer_large": infer_large,
    "profile": profiles,
    "scaling": scaling,
}
SUITES = {
    "train": ["ceilings", "train_b5", "train_b32", "profile"],
    "infer": ["ceilings", "infer_small", "infer_large", "profile", "scaling"],
    "all": list(WORKLOADS),
}


RECORD_WORKLOAD = {
    "train_b5": ["train_step"],
    "train_b32": ["train_step"],
    "infer_small": ["infer_small"],
    "infer_large": ["infer_large"],
    "profile": ["profile_train", "profile_infer", "profile_large"],
    "scaling": ["scaling"],
}


def skip_workload(ctx: Context, name: str) -> None:
    """Record every path of workload ``name`` as skipped for lack of time."""
    for workload in RECORD_WORKLOAD.get(name, [name]):
        paths = ctx.paths
        if name == "scaling":
            paths = [p for p in ctx.paths if p.name in ctx.settings.scaling_paths]
        elif workload == "profile_large":
            paths = [p for p in ctx.paths if p.name in ctx.settings.profile_large_paths]
        elif name == "profile":
            paths = [p for p in ctx.paths if p.name in ctx.settings.profile_paths]
        for path in paths:
            record = new_record(
                workload, path.implementation, path.spec.name, {"label": name}, ctx.common
            )
            record["skipped"] = f"not started: {ctx.budget.reason()}"
            ctx.records.append(record)


def run_workloads(
    ctx: Context, names: list[str], after_each: Callable[[], None] | None = None
) -> None:
    """Run ``names`` in priority order; past the budget the rest are recorded as skipped.

    ``after_each`` runs after every workload (the entry point writes the results so far, so
    that a run stopped from outside still leaves them).
    """
    for name in names:
        if ctx.budget.exhausted() and name != "ceilings":
            log.warning("workload %s: skipped, %s", name, ctx.budget.reason())
            skip_workload(ctx, name)
            ctx.timings_s[name] = 0.0
            continue
        start = time.perf_counter()
        log.info(
            "workload %s: start (%.0f s of %.0f s spent)",
            name,
            ctx.budget.spent(),
            ctx.budget.seconds,
        )
        WORKLOADS[name](ctx)
        ctx.timings_s[name] = time.perf_counter() - start
        log.info("workload %s: done in %.1f s", name, ctx.timings_s[name])
        if after_each is not None:
            after_each()
