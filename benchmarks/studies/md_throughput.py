"""MD throughput: ASE velocity-Verlet driven by macelab's calculator and by mace-torch's.

Two systems: a small molecule (acetylacetone, 15 atoms, the first AcAc 300 K frame shipped
with macelab) reported in MD steps/s, and a large periodic system (liquid-like water, 3,000
atoms by default) reported in atoms x steps / s. The model is the paper's (256 channels,
L = 2, nu = 3, elements H C O) with random weights, built once as a mace-torch model and
converted exactly to macelab (``from_mace_torch``), so every row runs the same function.

Rows: macelab's :class:`~macelab.calculator.MACECalculator` in each ``--precisions`` name
with each ``--accelerate`` mode (``none`` plain calls; ``graphs`` CUDA graphs), and
mace-torch's ``mace.calculators.MACECalculator`` in float64 and float32 (plus
cuEquivariance in float32 where it is installed). Every row: Maxwell-Boltzmann velocities at
300 K (same seed), 0.5 fs steps; warm-up steps first (graph capture and neighbour lists
included there), then timed steps until ``--steps`` or ``--max-seconds``. macelab reuses
neighbour lists within a 0.5 Å skin; mace-torch builds one every step (its behaviour).

    python benchmarks/studies/md_throughput.py --device cuda --out DIR
    python benchmarks/studies/md_throughput.py --tiny --device cpu --out DIR   # a quick CPU check
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import ase
import ase.io
import numpy as np
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from benchmarks.implementations import ModelStatistics, build_reference_mace
from benchmarks.settings import ModelSpec
from benchmarks.systems import water_box

ELEMENTS = (1, 6, 8)  # H C O: acetylacetone and water
# Rough isolated-atom energies (eV); with random weights only their size matters.
E0S = {1: -13.6, 6: -1029.0, 8: -2041.0}


@dataclass
class Row:
    """One calculator to time: a name for the table and a factory (built lazily)."""

    implementation: str
    precision: str
    accelerate: str
    build: Callable[[], ase.calculators.calculator.Calculator] | None
    skipped: str | None = None


def small_molecule() -> ase.Atoms:
    """The first acetylacetone frame shipped with macelab (15 atoms)."""
    from macelab.data.packaged import packaged_path

    atoms = ase.io.read(packaged_path("dataset_acac/train_300K.xyz"), index=0)
    return ase.Atoms(atoms.numbers, atoms.positions)


def large_system(n_molecules: int) -> ase.Atoms:
    """Periodic liquid-like water (``benchmarks.systems.water_box``)."""
    config = water_box(n_molecules)
    return ase.Atoms(config.atomic_numbers, config.positions, cell=config.cell, pbc=True)


def reference_model(tiny: bool) -> torch.nn.Module:
    """The float64 mace-torch model with random weights every row derives from."""
    spec = ModelSpec(atomic_numbers=ELEMENTS)
    if tiny:
        spec = ModelSpec(atomic_numbers=ELEMENTS, channels=8, max_L=1, correlation=2)
    torch.manual_seed(0)
    stats = ModelStatistics(E0S, avg_num_neighbors=12.0, scale=1.0, shift=0.0, source="fixed")
    return build_reference_mace(spec, stats)


def rows(reference: torch.nn.Module, args: argparse.Namespace) -> list[Row]:
    """Every calculator of the table, in order."""
    from macelab.calculator import MACECalculator
    from macelab.interop import from_mace_torch

    ours = from_mace_torch(reference).eval()
    table: list[Row] = []
    for accelerate in args.accelerate:
        for name in args.precisions:
            mode = None if accelerate == "none" else accelerate
            skipped = None
            if mode is not None and args.device != "cuda":
                skipped = f"accelerate={mode} needs CUDA"

            def build(name: str = name, mode: str | None = mode) -> MACECalculator:
                return MACECalculator(ours, device=args.device, precision=name, accelerate=mode)

            table.append(Row("macelab", name, accelerate, build, skipped))
    if not args.no_mace_torch:
        try:
            from mace.calculators import MACECalculator as MaceCalculator
        except ImportError as error:
            table.append(Row("mace-torch", "64/32", "none", None, f"not importable: {error}"))
            return table
        variants = [("64", "float64", False), ("32", "float32", False)]
        if args.device == "cuda":
            variants.append(("32", "float32", True))
        for name, dtype, cueq in variants:
            skipped = None
            if cueq:
                try:
                    import cuequivariance_torch  # noqa: F401
                except ImportError:
                    skipped = "cuequivariance_torch not installed"

            def build_mace(dtype: str = dtype, cueq: bool = cueq) -> MaceCalculator:
                model = copy.deepcopy(reference).to(getattr(torch, dtype))
                return MaceCalculator(
                    models=model, device=args.device, default_dtype=dtype, enable_cueq=cueq
                )

            label = "mace-torch+cueq" if cueq else "mace-torch"
            table.append(Row(label, name, "none", build_mace, skipped))
    return table


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_md(row: Row, atoms: ase.Atoms, steps: int, warmup: int, args) -> dict:
    """Time ``steps`` velocity-Verlet steps (after ``warmup``) of ``atoms`` with ``row``."""
    record = {
        "implementation": row.implementation,
        "precision": row.precision,
        "accelerate": row.accelerate,
        "n_atoms": len(atoms),
    }
    if row.skipped or row.build is None:
        return {**record, "skipped": row.skipped}
    atoms = atoms.copy()
    try:
        calc = row.build()
        atoms.calc = calc
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
        Stationary(atoms)
        dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        dynamics.run(warmup)
        _synchronize(args.device)
        warmup_s = time.perf_counter() - started
        start_energy = atoms.get_total_energy()
        done, started = 0, time.perf_counter()
        while done < steps and time.perf_counter() - started < args.max_seconds:
            chunk = min(10, steps - done)
            dynamics.run(chunk)
            done += chunk
        _synchronize(args.device)
        elapsed = time.perf_counter() - started
    except Exception as error:  # a failing row is a row that says so
        message = f"{type(error).__name__}: {error}"
        if len(message) > 500:  # TorchScript puts the cause (e.g. out of memory) last
            message = message[:150] + " [...] " + message[-350:]
        return {**record, "failed": message}
    record.update(
        steps=done,
        seconds=elapsed,
        warmup_steps=warmup,
        warmup_s=warmup_s,
        steps_per_s=done / elapsed,
        atoms_steps_per_s=done * len(atoms) / elapsed,
        ms_per_step=1e3 * elapsed / done,
        final_potential_energy_eV=float(atoms.get_potential_energy()),
        total_energy_change_eV_per_atom=float(
            (atoms.get_total_energy() - start_energy) / len(atoms)
        ),
        neighbour_list_builds=getattr(calc, "neighbour_list_builds", None),
        peak_memory_MiB=(
            torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
        ),
    )
    return record


def markdown(records: list[dict]) -> str:
    """One table per system: steps/s (small) and atoms/s (large) for every row."""
    header = (
        "| system | implementation | precision | accelerate | atoms | steps timed | ms / step "
        "| steps/s | atoms/s | neighbour lists | peak MiB |\n|" + "---|" * 11
    )
    lines = [header]
    for r in records:
        head = f"| {r['system']} | {r['implementation']} | {r['precision']} | {r['accelerate']} "
        if "steps_per_s" not in r:
            reason = r.get("skipped") or r.get("failed")
            lines.append(head + f"| {r['n_atoms']} | — | {reason} | | | | |")
            continue
        memory = "—" if r["peak_memory_MiB"] is None else f"{r['peak_memory_MiB']:.0f}"
        builds = "—" if r["neighbour_list_builds"] is None else r["neighbour_list_builds"]
        lines.append(
            head + f"| {r['n_atoms']} | {r['steps']} | {r['ms_per_step']:.2f} | "
            f"{r['steps_per_s']:.1f} | {r['atoms_steps_per_s']:.0f} | {builds} | {memory} |"
        )
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str]:
    import e3nn

    found = {"python": platform.python_version(), "torch": torch.__version__}
    found["e3nn"] = e3nn.__version__
    found["ase"] = ase.__version__
    try:
        import mace

        found["mace-torch"] = mace.__version__
    except (ImportError, AttributeError):
        pass
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", nargs="+", default=["64", "32", "policy_safe_fp16"])
    parser.add_argument("--accelerate", nargs="+", default=["none", "graphs"])
    parser.add_argument("--systems", nargs="+", default=["small", "large"])
    parser.add_argument("--water-molecules", type=int, default=1000)
    parser.add_argument("--small-steps", type=int, default=300)
    parser.add_argument("--large-steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="cap per timed row")
    parser.add_argument("--no-mace-torch", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a small model and short runs")
    args = parser.parse_args(argv)
    if args.tiny:
        args.water_molecules, args.small_steps, args.large_steps = 27, 20, 4
        args.warmup = 2
    args.out.mkdir(parents=True, exist_ok=True)
    reference = reference_model(args.tiny)
    systems = {"small": small_molecule, "large": lambda: large_system(args.water_molecules)}
    records: list[dict] = []
    for system in args.systems:
        atoms = systems[system]()
        steps = args.small_steps if system == "small" else args.large_steps
        for row in rows(reference, args):
            print(f"{system}: {row.implementation} {row.precision} {row.accelerate}", flush=True)
            record = {"system": system, **run_md(row, atoms, steps, args.warmup, args)}
            records.append(record)
            gc.collect()  # ASE's dynamics hold reference cycles to the calculator
            if args.device == "cuda":
                torch.cuda.empty_cache()
            (args.out / "md_throughput.json").write_text(
                json.dumps(
                    {"date": str(date.today()), "versions": versions(), "records": records},
                    indent=2,
                )
            )
    text = markdown(records)
    (args.out / "md_throughput.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
