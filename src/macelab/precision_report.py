"""``python -m macelab.precision_report``: equivariance and error against float64 for every
precision and policy, on real molecules and a periodic cell.

For each precision name (``macelab.precision.precision_names()``) the same weights run
(:func:`macelab.precision.inference.for_inference`) on:

* molecules: AcAc frames (shipped with macelab) and 3BPA frames when ``MACELAB_DATA`` has
  them; a rattled periodic silicon-carbon cell built with ASE (stress included);
* each structure and ``--transforms`` random O(3) transforms Q (half of them reflections).

Reported per precision (max and median over structures and transforms):

* ``energy_equivariance``: ``|E_int(Qx) - E_int(x)| / |E_int(x)|`` on the interaction
  energy (E minus the isolated-atom sum, whose size would hide the error);
* ``forces_equivariance``: ``||F(Qx) - Q F(x)|| / ||F(x)||``;
* ``interaction_energy_error_meV_per_atom``, ``energy_error_meV_per_atom`` (total: in
  float32 the isolated-atom sum alone rounds to ~0.5 meV/atom for heavy elements) and
  ``forces_rmse_meV_per_A`` against ``64``.

Weights: a checkpoint (``--ckpt``, EMA weights) or a random model of a size of
``conf/model/size`` (``--size paper`` is ``model/size=paper``: 256 channels, L <= 2;
``--channels``, ``--max-L`` and ``--correlation`` change it); the output says which. A line
per precision on stderr shows the progress. Writes ``precision_report.json``,
``precision_report.md`` and ``precision_report.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from macelab.cli import user_errors_exit
from macelab.config import config_dir
from macelab.data.graph import atoms_to_graph
from macelab.data.locate import locate
from macelab.model import MACE
from macelab.precision import default_dtype, precision_names
from macelab.precision.inference import for_inference
from macelab.training.checkpoint import load_model


def model_sizes() -> dict[str, dict[str, int]]:
    """``{name: {channels, max_L}}`` of ``conf/model/size/*.yaml``: the sizes that
    ``model/size=<name>`` gives in training."""
    import yaml

    sizes = {}
    for path in sorted((config_dir() / "model" / "size").glob("*.yaml")):
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        sizes[path.stem] = {key: int(values[key]) for key in ("channels", "max_L")}
    return sizes


SIZES = model_sizes()


def random_model(
    size: str,
    max_ell: int = 3,
    max_L: int | None = None,
    channels: int | None = None,
    correlation: int = 3,
):
    """A MACE for H, C, N, O, Si with fixed random weights (float64), of ``model/size=size``;
    ``max_L`` and ``channels`` override the size's (a large-L model: ``max_L=3``)."""
    torch.manual_seed(0)
    settings = {"correlation": correlation, **SIZES[size]}
    if max_L is not None:
        settings["max_L"] = max_L
    if channels is not None:
        settings["channels"] = channels
    with default_dtype(torch.float64):
        return MACE(
            atomic_numbers=[1, 6, 7, 8, 14],
            atomic_energies=[-13.6, -1029.0, -1485.0, -2041.0, -7800.0],
            avg_num_neighbors=10.0,
            max_ell=max_ell,
            scale=0.5,
            **settings,
        )


def structures(count: int) -> list[tuple[str, Any]]:
    """``count`` AcAc and 3BPA frames (3BPA if present) and one periodic cell."""
    import ase.io
    from ase.build import bulk

    found = []
    for name in ("dataset_acac/train_300K.xyz", "dataset_3BPA/train_300K.xyz"):
        try:
            path = locate(name, download=False).path
        except Exception:  # not available here: report without it
            continue
        for index, atoms in enumerate(ase.io.read(path, index=f":{count}")):
            found.append((f"{name.split('/')[0].removeprefix('dataset_')}[{index}]", atoms))
    cell = bulk("Si", "diamond", a=5.43).repeat((2, 2, 2))
    cell.numbers[[3, 9]] = 6
    cell.rattle(0.05, seed=1)
    found.append(("Si62C2 (periodic)", cell))
    return found


def _predict(model, context, atoms, device) -> dict[str, np.ndarray]:
    from torch_geometric.data import Batch

    periodic = bool(np.all(atoms.pbc))
    batch = Batch.from_data_list([atoms_to_graph(atoms, model.r_max)]).to(device)
    with context():
        out = model(batch, compute_forces=True, compute_stress=periodic)
    return {
        "energy": float(out["energy"].detach().double()[0]),
        "interaction": float(out["interaction_energy"].detach().double()[0]),
        "forces": out["forces"].detach().double().cpu().numpy(),
    }


def _orthogonal(rng: np.random.Generator, reflect: bool) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if reflect else q


def measure(
    model: torch.nn.Module,
    names: list[str],
    transforms: int,
    count: int,
    device: str,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """The report's numbers per precision name (see the module docstring); ``progress``
    receives a line per precision measured."""
    systems = structures(count)
    reference, ref_context = for_inference(model, "64", device)
    refs = [_predict(reference, ref_context, atoms, device) for _, atoms in systems]
    results: dict[str, dict[str, float]] = {}
    for number, name in enumerate(names, start=1):
        started = time.perf_counter()
        runner, context = for_inference(model, name, device)
        rng = np.random.default_rng(0)
        e_eq, f_eq, e_err, i_err, f_err = [], [], [], [], []
        for (_, atoms), ref in zip(systems, refs, strict=True):
            base = _predict(runner, context, atoms, device)
            e_err.append(abs(base["energy"] - ref["energy"]) / len(atoms) * 1e3)
            i_err.append(abs(base["interaction"] - ref["interaction"]) / len(atoms) * 1e3)
            f_err.append(float(np.sqrt(np.mean((base["forces"] - ref["forces"]) ** 2))) * 1e3)
            for k in range(transforms):
                q = _orthogonal(rng, reflect=bool(k % 2))
                moved = atoms.copy()
                moved.positions = atoms.positions @ q.T
                if np.all(atoms.pbc):
                    moved.cell = atoms.cell.array @ q.T
                out = _predict(runner, context, moved, device)
                change = abs(out["interaction"] - base["interaction"])
                e_eq.append(change / abs(base["interaction"]))
                norm = np.linalg.norm(base["forces"])
                f_eq.append(np.linalg.norm(out["forces"] - base["forces"] @ q.T) / norm)
        results[name] = {
            "energy_equivariance_max": float(np.max(e_eq)),
            "energy_equivariance_median": float(np.median(e_eq)),
            "forces_equivariance_max": float(np.max(f_eq)),
            "forces_equivariance_median": float(np.median(f_eq)),
            "energy_error_meV_per_atom_max": float(np.max(e_err)),
            "interaction_energy_error_meV_per_atom_max": float(np.max(i_err)),
            "forces_rmse_meV_per_A_max": float(np.max(f_err)),
            "forces_rmse_meV_per_A_median": float(np.median(f_err)),
        }
        if progress is not None:
            seconds = time.perf_counter() - started
            progress(
                f"[{number}/{len(names)}] {name}: {len(systems)} structures x "
                f"{transforms + 1} orientations in {seconds:.0f} s"
            )
    return results


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Precision report ({report['weights']})",
        "",
        f"device {report['device']}, {report['date']}, torch {report['torch']}; "
        f"{report['structures']} structures x {report['transforms']} O(3) transforms.",
        "",
        "| precision | E equiv. (max) | E equiv. (median) | F equiv. (max) | F equiv. (median) "
        "| E_int err vs fp64 (meV/atom, max) | E err (meV/atom, max) "
        "| F RMSE vs fp64 (meV/Å, max) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"| {name} | {r['energy_equivariance_max']:.1e} | "
            f"{r['energy_equivariance_median']:.1e} | {r['forces_equivariance_max']:.1e} | "
            f"{r['forces_equivariance_median']:.1e} | "
            f"{r['interaction_energy_error_meV_per_atom_max']:.3g} | "
            f"{r['energy_error_meV_per_atom_max']:.3g} | {r['forces_rmse_meV_per_A_max']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["results"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(names))
    for key, label in (("forces_equivariance_max", "force equivariance (max, relative)"),):
        axes[0].bar(x, [max(report["results"][n][key], 1e-17) for n in names], label=label)
    axes[0].set_yscale("log")
    axes[0].set_title("Equivariance error by precision")
    axes[0].set_ylabel("max ||F(Qx) - Q F(x)|| / ||F(x)||")
    values = [max(report["results"][n]["forces_rmse_meV_per_A_max"], 1e-12) for n in names]
    axes[1].bar(x, values, color="tab:orange")
    axes[1].set_yscale("log")
    axes[1].set_title("Force error against float64")
    axes[1].set_ylabel("force RMSE vs fp64 (meV/Å, max over structures)")
    for ax in axes:
        ax.set_xticks(x, names, rotation=45, ha="right")
        ax.set_xlabel("precision")
    fig.suptitle(f"MACE precisions ({report['weights']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _program_name() -> str:
    """How the user started this: the ``macelab-precision-report`` console script or
    ``python -m macelab.precision_report``."""
    script = Path(sys.argv[0]).name
    return script if script.startswith("macelab-") else "python -m macelab.precision_report"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``macelab-precision-report`` / ``python -m
    macelab.precision_report``."""
    parser = argparse.ArgumentParser(prog=_program_name(), description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/precision_report"))
    parser.add_argument("--ckpt", default=None, help="a macelab checkpoint (else random)")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load a checkpoint that holds more than tensors (runs code from it: trusted "
        "files only; docs/security.md)",
    )
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="tiny", help="as model/size= (random weights)"
    )
    parser.add_argument("--channels", type=int, default=None, help="override the size's")
    parser.add_argument("--max-ell", type=int, default=3)
    parser.add_argument("--max-L", type=int, default=None, help="override the size's max_L")
    parser.add_argument("--correlation", type=int, default=3)
    parser.add_argument("--precisions", default=None, help="comma list (default: all)")
    parser.add_argument("--structures", type=int, default=2, help="frames per data set")
    parser.add_argument("--transforms", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``macelab-precision-report`` console script and ``python -m
    macelab.precision_report``: parse ``argv`` (default: the command line), measure, write."""
    args = build_parser().parse_args(argv)

    def say(line: str) -> None:  # progress on stderr; the report itself goes to stdout
        print(f"precision_report: {line}", file=sys.stderr, flush=True)

    @user_errors_exit
    def run() -> None:
        if args.ckpt:
            model, _ = load_model(args.ckpt, trust_pickle=args.trust_pickle)
            weights = f"trained: {args.ckpt}"
        else:
            max_L = args.max_L if args.max_L is not None else SIZES[args.size]["max_L"]
            channels = args.channels or SIZES[args.size]["channels"]
            say(f"building a random model/size={args.size} model ({channels} channels)")
            model = random_model(
                args.size, args.max_ell, args.max_L, args.channels, args.correlation
            )
            weights = (
                f"random weights, model/size={args.size} ({channels} channels, max_L {max_L}, "
                f"max_ell {args.max_ell}, correlation {args.correlation})"
            )
        names = args.precisions.split(",") if args.precisions else precision_names()
        say(f"measuring {len(names)} precisions against float64")
        results = measure(model, names, args.transforms, args.structures, args.device, say)
        device = torch.cuda.get_device_name() if args.device == "cuda" else platform.machine()
        report = {
            "weights": weights,
            "device": device,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "structures": len(structures(args.structures)),
            "transforms": args.transforms,
            "command": " ".join([_program_name(), *(argv or sys.argv[1:])]),
            "results": results,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "precision_report.json").write_text(json.dumps(report, indent=2))
        (args.out / "precision_report.md").write_text(markdown(report))
        plot(report, args.out / "precision_report.png")
        print(markdown(report))

    run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
