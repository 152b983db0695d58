"""One entry point: macelab side by side with mace-torch (and cuEquivariance) on one device.

    python benchmarks/run.py --suite train|infer|all --out DIR [--tiny] [--device cpu|cuda]
    python benchmarks/run.py --suite cpu --out DIR [--tiny]

The first writes ``DIR/results.json`` (one record per workload x implementation x precision),
``DIR/results.md`` (the tables) and ``DIR/run_info.json`` (settings, per-workload seconds),
and prints the tables last. ``--tiny --device cpu`` is the CI smoke run (about a minute).
The CPU suite times what CPU users run: both implementations' ASE calculators on one molecule,
every model size, float32 and float64, interleaved call by call on one thread
(``benchmarks/studies/cpu_calculators.py``); it writes ``DIR/results.json`` and
``DIR/results.md`` in that study's format. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

import macelab  # noqa: F401  (makes e3nn importable under every torch; before mace)
from benchmarks import report
from benchmarks.implementations import (
    ModelStatistics,
    build_reference_mace,
    make_paths,
    reference_path,
)
from benchmarks.measure import Budget, Context
from benchmarks.settings import Settings, settings_for
from benchmarks.studies import cpu_calculators
from benchmarks.systems import MoleculeSet, default_data_root, load_molecules, make_batch
from benchmarks.workloads import SUITES, WORKLOADS, run_workloads

log = logging.getLogger("benchmarks")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=[*sorted(SUITES), "cpu"], default="all")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--tiny", action="store_true", help="tiny model and systems (CI)")
    parser.add_argument(
        "--model",
        choices=["paper", "large_L"],
        default="paper",
        help="paper: the rMD17 model (256 channels, L <= 2); large_L: 128 channels, L <= 3",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available"
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder with dataset_3BPA/ (default: $MACELAB_DATA)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-clock budget; later workloads are skipped past it "
        "(default 480 s, 240 s with --tiny)",
    )
    parser.add_argument(
        "--workloads", default=None, help=f"comma list instead of the suite, from {list(WORKLOADS)}"
    )
    parser.add_argument(
        "--paths", default=None, help="comma list of paths to time, e.g. macelab/32,mace-torch/32"
    )
    return parser.parse_args(argv)


def statistics(molecules: MoleculeSet, settings: Settings) -> ModelStatistics:
    """avg_num_neighbors, scale (RMS force) and shift (mean interaction energy per atom) of
    the molecules the workloads use; E0s from the isolated atoms."""
    configs = molecules.configs[: 32 * settings.num_rotating_batches]
    batch = make_batch(configs, settings.model.r_max)
    avg = batch.edge_index.shape[1] / batch.num_nodes
    labelled = [c for c in configs if c.energy is not None and c.forces is not None]
    if not labelled:
        return ModelStatistics(
            molecules.atomic_energies,
            avg,
            1.0,
            0.0,
            f"{molecules.source}; unlabelled: scale 1, shift 0",
        )
    e0 = molecules.atomic_energies
    per_atom = [
        (c.energy - sum(e0.get(int(z), 0.0) for z in c.atomic_numbers)) / c.num_atoms
        for c in labelled
    ]
    forces = np.concatenate([c.forces.reshape(-1) for c in labelled])
    return ModelStatistics(
        e0,
        avg,
        float(np.sqrt(np.mean(forces**2))),
        float(np.mean(per_atom)),
        f"{len(configs)} configurations of {molecules.source}",
    )


def cpu_suite(args: argparse.Namespace) -> int:
    """The calculators on a CPU, every size (``--tiny``: the tiny model, two rounds)."""
    argv = ["--out", str(args.out / "results.json"), "--sizes"]
    argv += ["tiny", "--rounds", "2", "--calls", "2", "--warmup", "1"] if args.tiny else ["all"]
    if args.data_root is not None:  # the molecule: 3BPA's first frame under it
        os.environ["MACELAB_DATA"] = str(args.data_root)
    status = cpu_calculators.main(argv)
    results = json.loads((args.out / "results.json").read_text())
    (args.out / "results.md").write_text(cpu_calculators.table(results) + "\n")
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.suite == "cpu":
        if args.device == "cuda" or args.workloads or args.paths or args.model != "paper":
            raise SystemExit("--suite cpu takes only --out, --tiny and --data-root")
        return cpu_suite(args)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    settings = settings_for(args.tiny, args.model)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    budget = Budget(args.budget_s or (240.0 if args.tiny else 480.0))
    names = args.workloads.split(",") if args.workloads else SUITES[args.suite]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    if "ceilings" not in names:
        names = ["ceilings", *names]
    args.out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    data_root = args.data_root or default_data_root()
    molecules = load_molecules(
        data_root, settings.model.atomic_numbers, settings.small_molecule_atoms
    )
    log.info("molecules: %s", molecules.source)
    stats = statistics(molecules, settings)
    t0 = time.perf_counter()
    mace_reference = build_reference_mace(settings.model, stats)
    log.info("float64 mace-torch model built in %.1f s", time.perf_counter() - t0)
    wanted = args.paths.split(",") if args.paths else []
    cueq = {w.split("/", 1)[1] for w in wanted if w.startswith("mace-torch+cueq/")}
    cueq_precisions = tuple(dict.fromkeys([*settings.cueq_precisions, *sorted(cueq)]))
    paths = make_paths(mace_reference, settings.model, device, cueq_precisions)
    reference = reference_path(paths)
    timed = [p for p in paths if p.name in wanted] if wanted else paths
    for path in paths:
        log.info("path %-24s %s", path.name, path.unavailable or "available")
    common = report.meta(device, ["benchmarks/run.py", *argv])
    ctx = Context(
        settings, device, timed, reference, mace_reference, molecules, stats, common, budget
    )
    title = f"{settings.name} run on {common['device']['name']}"

    def write() -> str:
        report.write_json(ctx.records, args.out / "results.json")
        table = report.markdown(ctx.records, title)
        (args.out / "results.md").write_text(table)
        info = {
            "settings": settings.to_dict(),
            "workload_seconds": ctx.timings_s,
            "total_seconds": time.perf_counter() - started,
            "budget_seconds": budget.seconds,
            "molecules": molecules.source,
            "atomic_energies_source": molecules.atomic_energies_source,
            "statistics": vars(stats),
            "reference": reference.name,
            "paths": {p.name: p.unavailable or "available" for p in paths},
            "command": common["command"],
        }
        (args.out / "run_info.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
        return table

    run_workloads(ctx, names, after_each=write)
    table = write()
    for name, seconds in ctx.timings_s.items():
        print(f"{name:>12}: {seconds:7.1f} s")
    total = time.perf_counter() - started
    print(f"{'total':>12}: {total:7.1f} s (budget {budget.seconds:.0f} s)\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
