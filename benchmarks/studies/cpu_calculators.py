"""CPU: macelab's and mace-torch's ASE calculators on one small molecule, same weights.

Each model size is built once in float64 by mace-torch (``ScaleShiftMACE``, as the harness
builds it: ``benchmarks.implementations.build_reference_mace``) with random weights and
converted exactly to macelab (``macelab.interop.from_mace_torch``). Each precision then gets
one public calculator per implementation: ``macelab.calculator.MACECalculator(model,
precision=...)`` (its defaults otherwise: a 0.5 Å neighbour-list skin) and
``mace.calculators.MACECalculator(models=..., default_dtype=...)`` (a fresh neighbour list
every call, its behaviour).

A timed call is ``atoms.get_potential_energy(); atoms.get_forces()`` after every atom has
been moved by up to ``--displacement`` Å (uniform per component, a fresh draw per call and
the same geometry for both calculators), so no result is cached. The calculators
alternate call by call within a round (the order swapped every round), so load on a shared
machine hits both alike; ``--warmup`` untimed calls of each first. Reported per size,
precision and implementation: median, p10 and p90 ms per call over all rounds. Energies and
forces of the two are compared on the same geometries (float64: relative difference
< 1e-5 expected).

    python benchmarks/studies/cpu_calculators.py --out benchmarks/results/X.json
    python benchmarks/studies/cpu_calculators.py --table benchmarks/results/X.json
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ase
import numpy as np
import torch

from benchmarks.implementations import ModelStatistics, build_reference_mace
from benchmarks.settings import ModelSpec
from benchmarks.systems import default_data_root, load_molecules, synthetic_molecule
from macelab.data.graph import atoms_to_graph
from macelab.precision_report import model_sizes

# Every size of conf/model/size, and issue 29's "small model" (64 channels, L_max 1, the
# size of the first CPU comparison; "small" in the earlier results files of this study).
SIZES = {
    "c64_L1": ModelSpec(channels=64, max_L=1),
    **{name: ModelSpec(**fields) for name, fields in model_sizes().items()},
}
DEFAULT_SIZES = ["c64_L1", "paper"]
PRECISIONS = {"32": "float32", "64": "float64"}
IMPLEMENTATIONS = ("macelab", "mace-torch")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--out", type=Path, help="results JSON to write")
    parser.add_argument("--table", type=Path, help="print the markdown table of a results JSON")
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=DEFAULT_SIZES,
        choices=[*SIZES, "all"],
        help="model sizes (conf/model/size names, and c64_L1); all: every one",
    )
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument(
        "--molecule",
        default="auto",
        choices=("auto", "acac", "synthetic"),
        help="auto: the first 3BPA train_300K frame under $MACELAB_DATA (27 atoms), else "
        "the packaged AcAc (15 atoms); synthetic: a 27-atom 3BPA-like random molecule",
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per round each")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls of each first")
    parser.add_argument("--displacement", type=float, default=0.01, help="Å per call")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1: on a shared 2-core machine two threads wait "
        "on each other whenever another job holds a core, 3-10x slower and erratic)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="", help="a note stored in the results")
    args = parser.parse_args(argv)
    if "all" in args.sizes:
        args.sizes = list(SIZES)
    if args.table is None and args.out is None:
        parser.error("give --out FILE (measure) or --table FILE (print a table)")
    return args


def molecule(choice: str) -> tuple[ase.Atoms, str, dict[int, float]]:
    """The molecule, where it came from, and isolated-atom energies for the E0s."""
    atomic_numbers = ModelSpec().atomic_numbers
    if choice == "synthetic":
        config = synthetic_molecule(27, seed=0)
        energies = dict.fromkeys(atomic_numbers, 0.0)
        return ase.Atoms(config.atomic_numbers, config.positions), "synthetic 27 atoms", energies
    root = None if choice == "acac" else default_data_root()
    found = load_molecules(root, atomic_numbers)
    config = found.configs[0]
    atoms = ase.Atoms(config.atomic_numbers, config.positions)
    return atoms, f"{found.name}: {found.source}, frame 0", found.atomic_energies


def calculators(spec: ModelSpec, atoms: ase.Atoms, energies: dict[int, float], precision: str):
    """macelab's and mace-torch's calculators of one random-weight model (same weights)."""
    from mace.calculators import MACECalculator as MaceTorchCalculator

    from macelab.calculator import MACECalculator
    from macelab.interop import from_mace_torch

    graph = atoms_to_graph(atoms, spec.r_max)
    avg = graph.edge_index.shape[1] / len(atoms)
    stats = ModelStatistics(energies, avg, scale=1.0, shift=0.0, source="the molecule")
    torch.manual_seed(0)
    reference = build_reference_mace(spec, stats)
    ours = from_mace_torch(reference).eval()
    dtype = PRECISIONS[precision]
    theirs = copy.deepcopy(reference).to(getattr(torch, dtype))
    return {
        "macelab": MACECalculator(ours, device="cpu", precision=precision),
        "mace-torch": MaceTorchCalculator(models=theirs, device="cpu", default_dtype=dtype),
    }


def call(calc: Any, atoms: ase.Atoms) -> tuple[float, float, np.ndarray]:
    """Seconds of one energy + forces call, and its results."""
    atoms = atoms.copy()
    atoms.calc = calc
    started = time.perf_counter()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    return time.perf_counter() - started, float(energy), np.array(forces)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    atoms, source, energies = molecule(args.molecule)
    rng = np.random.default_rng(args.seed)
    records = []
    for size in args.sizes:
        spec = SIZES[size]
        for precision in args.precisions:
            calcs = calculators(spec, atoms, energies, precision)
            for _ in range(args.warmup):
                for name in IMPLEMENTATIONS:
                    call(calcs[name], atoms)
            times: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
            energy_diff, force_diff = [], []
            for round_index in range(args.rounds):
                order = IMPLEMENTATIONS if round_index % 2 == 0 else IMPLEMENTATIONS[::-1]
                for _ in range(args.calls):
                    moved = atoms.copy()
                    moved.positions += rng.uniform(
                        -args.displacement, args.displacement, moved.positions.shape
                    )
                    results = {}
                    for name in order:
                        seconds, energy, forces = call(calcs[name], moved)
                        times[name].append(seconds)
                        results[name] = (energy, forces)
                    (e1, f1), (e2, f2) = results["macelab"], results["mace-torch"]
                    energy_diff.append(abs(e1 - e2) / max(abs(e2), 1e-12))
                    force_diff.append(np.abs(f1 - f2).max() / max(np.abs(f2).max(), 1e-12))
                medians = "  ".join(
                    f"{name} {1e3 * np.median(times[name][-args.calls :]):.1f} ms"
                    for name in IMPLEMENTATIONS
                )
                print(
                    f"[{size} {precision}] round {round_index + 1}/{args.rounds}: {medians}",
                    flush=True,
                )
            for name in IMPLEMENTATIONS:
                ms = 1e3 * np.asarray(times[name])
                records.append(
                    {
                        "size": size,
                        "model": {"channels": spec.channels, "max_L": spec.max_L},
                        "precision": precision,
                        "implementation": name,
                        "calls": len(ms),
                        "median_ms": float(np.median(ms)),
                        "p10_ms": float(np.percentile(ms, 10)),
                        "p90_ms": float(np.percentile(ms, 90)),
                        "times_ms": [round(float(t), 3) for t in ms],
                        "energy_rel_diff_max": float(max(energy_diff)),
                        "forces_rel_diff_max": float(max(force_diff)),
                    }
                )
            if hasattr(calcs["macelab"], "neighbour_list_builds"):
                records[-2]["neighbour_list_builds"] = calcs["macelab"].neighbour_list_builds
    return {
        "study": "cpu_calculators",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": device_description(),
        "versions": versions(),
        "commit": commit(),
        "command": "python " + " ".join(sys.argv),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average": list(os.getloadavg()),
        "molecule": {"source": source, "n_atoms": len(atoms)},
        "settings": {
            key: getattr(args, key)
            for key in ("rounds", "calls", "warmup", "displacement", "seed", "label")
        },
        "records": records,
    }


def device_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model}, {os.cpu_count()} cores visible"


def versions() -> dict[str, str]:
    import e3nn
    import mace

    import macelab

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "mace-torch": mace.__version__,
        "ase": ase.__version__,
        "numpy": np.__version__,
        "macelab": getattr(macelab, "__version__", "?"),
    }


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True)
        return head + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per size and precision, both implementations' median (p10-p90)."""
    lines = [
        f"{results['molecule']['n_atoms']} atoms ({results['molecule']['source'].split(':')[0]}),"
        f" {results['device']}, torch threads {results['torch_threads']}, commit "
        f"{results['commit']}, {results['date']}",
        "",
        "| model | precision | macelab ms (p10-p90) | mace-torch ms (p10-p90) "
        "| macelab speed vs mace-torch | max rel. diff E / F |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for record in results["records"]:
        rows.setdefault((record["size"], record["precision"]), {})[record["implementation"]] = (
            record
        )
    for (size, precision), pair in rows.items():
        ours, theirs = pair["macelab"], pair["mace-torch"]
        model = f"{size} ({ours['model']['channels']} ch, L_max {ours['model']['max_L']})"

        def cell(r: dict) -> str:
            return f"{r['median_ms']:.1f} ({r['p10_ms']:.1f}-{r['p90_ms']:.1f})"

        lines.append(
            f"| {model} | {precision} | {cell(ours)} | {cell(theirs)} | "
            f"{theirs['median_ms'] / ours['median_ms']:.2f}x | "
            f"{ours['energy_rel_diff_max']:.0e} / {ours['forces_rel_diff_max']:.0e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        print(table(json.loads(args.table.read_text())))
        return 0
    torch.set_num_threads(args.threads)
    results = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
