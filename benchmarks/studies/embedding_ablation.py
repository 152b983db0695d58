"""Compressed species embeddings: parameters, memory and accuracy per table kind, same budget.

Trains ``python -m macelab.train experiment=<data> model.embedding=... trainer.max_time=...``
once per variant, one after the other on the same device, with the same seed, split, data
set, precision and wall-time budget; only the element tables differ:

* ``full``: one row per element (the default, no override);
* ``low_rank:r``: ``model.embedding=low_rank model.embedding_rank=r``;
* ``int8``: ``model.embedding=int8`` (8-bit fake-quantised tables, float masters).

A variant whose run fails (e.g. an option this checkout does not have yet) becomes a row
with the error's last line; the others still run. Per run: parameters (total, and of the
element-dependent tables: node embedding, product-basis weights ``W_z`` and their factors,
self-connection), peak memory (CUDA max allocated during training on the GPU, the training
process's peak RSS everywhere), training ms per optimiser step (validation excluded, first
epoch excluded as warm-up), the validation energy / force RMSE at the best validation force
RMSE (the checkpoint that is tested) and each test set's RMSE (meV/atom, meV/Å). Without
training, the same variants' parameter counts for a foundation-sized element table
(atomic numbers 1..89), built in-process from the same config.

    python benchmarks/studies/embedding_ablation.py --budget-s 60 --out DIR                  # GPU
    python benchmarks/studies/embedding_ablation.py --tiny --device cpu --budget-s 8 \\
        --variants full,low_rank:2 --out DIR                                        # check

Writes ``DIR/embedding_ablation.json``, ``.md`` and ``.png`` (the runs go under
``DIR/runs/`` or ``--runs-dir``) and prints the table last. The 3BPA test sets are not in
the shared data: offline (``MACELAB_OFFLINE=1``) its test columns stay empty and the
validation RMSE is the accuracy; ``--data acac`` has its test sets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.studies.precision_budget import TINY, max_time

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VARIANTS = "full,low_rank:1,low_rank:2,low_rank:4,int8"
ELEMENTS = {"3bpa": [1, 6, 7, 8], "acac": [1, 6, 8]}  # the data sets' element tables
FOUNDATION_ELEMENTS = list(range(1, 90))
VAL_F, VAL_E = "val/forces_rmse_meV_per_A", "val/energy_per_atom_rmse_meV"


def overrides_for(variant: str) -> list[str]:
    """The Hydra overrides of ``variant``: ``full``, ``low_rank:r`` or ``int8``."""
    kind, _, rank = variant.partition(":")
    if kind == "full" and not rank:
        return []
    if kind == "low_rank" and rank.isdigit() and int(rank) >= 1:
        return ["model.embedding=low_rank", f"model.embedding_rank={int(rank)}"]
    if kind == "int8" and not rank:
        return ["model.embedding=int8"]
    raise SystemExit(f"unknown variant {variant!r}: use full, low_rank:<rank> or int8")


def run_name(variant: str) -> str:
    """A folder name for ``variant`` (``low_rank:2`` -> ``low_rank_r2``)."""
    return variant.replace(":", "_r")


def is_table(name: str) -> bool:
    """Whether parameter ``name`` belongs to an element-dependent table or its factors."""
    return (
        name.startswith("embedding.")
        or ".contraction." in name
        or ".self_connection." in name
        or "element_factors" in name
    )


def _train(command: list[str], log_path: Path, env: dict[str, str]) -> tuple[int, float | None]:
    """Run ``command`` with its output in ``log_path``; its exit code and peak RSS (MiB)."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = os.wait4(process.pid, 0)  # the child's own resource usage
        except ChildProcessError:  # pragma: no cover - reaped elsewhere
            return process.wait(), None
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024  # Linux: KiB


def error_line(text: str) -> str:
    """The line of a failed run's output that says what went wrong (else its last line)."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    lines = [x for x in lines if "HYDRA_FULL_ERROR" not in x]
    main_line = next(
        (x for x in reversed(lines) if "Error" in x or "Could not" in x or "error:" in x), ""
    )
    return (main_line or (lines[-1] if lines else "no output"))[:500].replace("|", "/")


def ms_per_step(metrics, global_batch_size: int) -> float | None:
    """Training ms per optimiser step: epochs after the first, validation excluded."""
    columns = ("time/train_epoch_s", "time/train_configurations")
    if not all(c in metrics for c in columns) or not global_batch_size:
        return None
    epochs = metrics.dropna(subset=list(columns))
    if len(epochs) > 1:
        epochs = epochs.iloc[1:]  # the first epoch warms up (kernels, caches)
    steps = sum(math.ceil(c / global_batch_size) for c in epochs["time/train_configurations"])
    return 1000 * float(epochs["time/train_epoch_s"].sum()) / steps if steps else None


def run_one(runs: Path, variant: str, args: argparse.Namespace) -> dict:
    """Train one variant for the budget; its parameters, memory, speed and errors."""
    run_dir = runs / run_name(variant)
    overrides = [
        f"experiment={args.data}",
        f"precision={args.precision}",
        f"hydra.run.dir={run_dir}",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"trainer.max_time={max_time(args.budget_s)}",
        "trainer.max_epochs=100000",
        "trainer.enable_progress_bar=false",
        f"seed={args.seed}",
        "+callbacks.peak_memory._target_=benchmarks.studies.ddp_callbacks.PeakMemory",
        f"+callbacks.peak_memory.path={run_dir}",
        *overrides_for(variant),
        *(TINY if args.tiny else []),
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    runs.mkdir(parents=True, exist_ok=True)
    log_path = runs / f"{run_name(variant)}.log"
    started = time.perf_counter()
    code, rss = _train([sys.executable, "-m", "macelab.train", *overrides], log_path, env)
    record: dict = {"variant": variant, "overrides": overrides_for(variant)}
    record["wall_s"] = time.perf_counter() - started
    if code != 0:
        record["error"] = error_line(log_path.read_text(errors="replace"))
        return record
    import pandas as pd

    metrics = pd.read_csv(run_dir / "metrics.csv")
    info = json.loads((run_dir / "run_info.json").read_text())
    tests = json.loads((run_dir / "results.json").read_text())
    memory = [json.loads(p.read_text()) for p in sorted(run_dir.glob("peak_memory_rank*.json"))]
    curve = metrics.dropna(subset=[VAL_F]) if VAL_F in metrics else metrics.iloc[:0]
    best = curve.loc[curve[VAL_F].idxmin()] if len(curve) else None
    record.update(
        epochs=info.get("epochs"),
        steps=info.get("global_step"),
        num_parameters=info.get("num_parameters"),
        peak_cuda_MiB=memory[0]["peak_MiB"] if memory else None,
        peak_rss_MiB=rss,
        ms_per_step=ms_per_step(metrics, info.get("global_batch_size") or 0),
        validations=len(curve),
        val={
            "epoch": None if best is None else int(best["epoch"]),
            "energy_per_atom_rmse_meV": _float(best, VAL_E),
            "forces_rmse_meV_per_A": _float(best, VAL_F),
        },
        test={
            name: {
                "energy_per_atom_rmse_meV": values.get("energy_per_atom_rmse_meV"),
                "forces_rmse_meV_per_A": values.get("forces_rmse_meV_per_A"),
                "num_structures": values.get("num_structures"),
            }
            for name, values in sorted(tests.items())
        },
    )
    return record


def _float(row, column: str) -> float | None:
    if row is None or column not in row or row[column] != row[column]:  # absent or NaN
        return None
    return float(row[column])


def model_config(args: argparse.Namespace, variant: str) -> dict:
    """The run's model config (Hydra-composed, as ``macelab.train`` sees it)."""
    from hydra import compose, initialize_config_dir

    from macelab.config import CONFIG_DIR, to_dict

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"experiment={args.data}",
                *overrides_for(variant),
                *[o for o in (TINY if args.tiny else []) if o.startswith("model.")],
            ],
        )
    return to_dict(cfg.model)


def count(args: argparse.Namespace, variant: str, atomic_numbers: list[int]) -> dict:
    """Parameters (total, tables) of ``variant`` built for ``atomic_numbers``, no training;
    for ``int8`` also the stored bytes of its tables."""
    import e3nn

    from macelab.model import build_model, compressed_table_bytes, count_parameters

    e3nn.set_optimization_defaults(jit_script_fx=False)
    try:
        cfg = model_config(args, variant)
        cfg.update(
            atomic_numbers=atomic_numbers,
            atomic_energies=[0.0] * len(atomic_numbers),
            avg_num_neighbors=10.0,
            scale=1.0,
            shift=0.0,
        )
        model = build_model(cfg)
    except Exception as error:  # an option this checkout lacks: a row that says so
        return {"error": f"{type(error).__name__}: {error}".splitlines()[0][:500]}
    tables = sum(p.numel() for n, p in model.named_parameters() if is_table(n))
    result = {"num_parameters": count_parameters(model), "table_parameters": tables}
    if cfg.get("embedding") == "int8":
        result["int8_table_bytes"] = compressed_table_bytes(model)["compressed"]
        result["fp32_table_bytes"] = compressed_table_bytes(model)["fp32"]
    return result


def _cell(value, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def _count(value) -> str:
    return "—" if value is None else f"{value:,}"


def test_names(record: dict) -> list[str]:
    return sorted({name for r in record["runs"] for name in r.get("test", {})})


def table(record: dict) -> str:
    """Markdown: the trained runs, then the parameter counts at the data's and 89 elements."""
    names = test_names(record)
    lines = [
        f"{record['data']}, {record['budget_s']:.0f} s of training per variant, precision "
        f"{record['precision']}, seed {record['seed']}, {record['device_name']}, "
        f"{record['date']}{' (tiny settings)' if record['tiny'] else ''}",
        "",
        "| variant | parameters | table parameters | epochs | steps | ms / step | "
        "peak CUDA MiB | peak RSS MiB | val E RMSE (meV/atom) | val F RMSE (meV/Å) | "
        + "".join(f"{t} E / F RMSE | " for t in names)
        + "note |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(names) + "---|",
    ]
    for r in record["runs"]:
        tables = r.get("counts", {}).get("data", {}).get("table_parameters")
        val = r.get("val", {})
        cells = [
            f"{_cell(t.get('energy_per_atom_rmse_meV'))} / {_cell(t.get('forces_rmse_meV_per_A'))}"
            if (t := r.get("test", {}).get(name))
            else "—"
            for name in names
        ]
        lines.append(
            f"| {r['variant']} | {_count(r.get('num_parameters'))} | {_count(tables)} | "
            f"{_cell(r.get('epochs'), 'd')} | {_cell(r.get('steps'), 'd')} | "
            f"{_cell(r.get('ms_per_step'), '.1f')} | {_cell(r.get('peak_cuda_MiB'), '.0f')} | "
            f"{_cell(r.get('peak_rss_MiB'), '.0f')} | "
            f"{_cell(val.get('energy_per_atom_rmse_meV'))} | "
            f"{_cell(val.get('forces_rmse_meV_per_A'))} | "
            + "".join(f"{c} | " for c in cells)
            + f"{r.get('error', '')} |"
        )
    n_data, n_big = len(record["elements"]), len(FOUNDATION_ELEMENTS)
    lines += [
        "",
        f"Parameters without training, the same model config at {n_data} elements (the "
        f"data's) and at {n_big} (atomic numbers 1..{n_big}); int8: bytes of the tables as "
        "stored (int8 values + fp32 row scales) against fp32.",
        "",
        f"| variant | parameters ({n_data}) | table parameters ({n_data}) | "
        f"parameters ({n_big}) | table parameters ({n_big}) | int8 table bytes ({n_big}) | "
        "note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["runs"]:
        data, big = r.get("counts", {}).get("data", {}), r.get("counts", {}).get("foundation", {})
        stored = (
            f"{big['int8_table_bytes']:,} (fp32 {big['fp32_table_bytes']:,})"
            if "int8_table_bytes" in big
            else "—"
        )
        lines.append(
            f"| {r['variant']} | {_count(data.get('num_parameters'))} | "
            f"{_count(data.get('table_parameters'))} | {_count(big.get('num_parameters'))} | "
            f"{_count(big.get('table_parameters'))} | {stored} | "
            f"{(data.get('error') or big.get('error') or '').replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    """Validation (and first test set's) force RMSE against parameters, one point per
    variant: at the data's elements (trained) and at 89 elements (counted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_forces = [
        n
        for n in test_names(record)
        if any(r.get("test", {}).get(n, {}).get("forces_rmse_meV_per_A") for r in record["runs"])
    ]
    test = with_forces[0] if with_forces else None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in (
        (axes[0], "data", f"parameters at {len(record['elements'])} elements (trained)"),
        (axes[1], "foundation", f"parameters at {len(FOUNDATION_ELEMENTS)} elements"),
    ):
        for i, r in enumerate(record["runs"]):
            x = r.get("counts", {}).get(key, {}).get("num_parameters")
            y = r.get("val", {}).get("forces_rmse_meV_per_A")
            if x is None or y is None:
                continue
            ax.scatter([x], [y], marker="o", color=f"C{i}")
            ax.annotate(r["variant"], (x, y), textcoords="offset points", xytext=(5, 5 - 10 * i))
            y_test = r.get("test", {}).get(test, {}).get("forces_rmse_meV_per_A")
            if y_test is not None:
                ax.scatter([x], [y_test], marker="x", color=f"C{i}")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.set_xlabel(label)
    axes[0].set_ylabel("force RMSE (meV/Å): o validation" + (f", x {test}" if test else ""))
    fig.suptitle(
        f"{record['data']}: species-embedding variants, {record['budget_s']:.0f} s each "
        f"({record['device_name']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: OUT/runs")
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--data", choices=sorted(ELEMENTS), default="3bpa")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and split (checks)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    for variant in variants:
        overrides_for(variant)  # refuse a misspelt variant before any training

    from benchmarks.report import run_meta  # torch: imported after the arguments parse

    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.runs_dir or args.out / "runs"
    record = {
        "data": args.data,
        "elements": ELEMENTS[args.data],
        "budget_s": args.budget_s,
        "precision": args.precision,
        "seed": args.seed,
        **run_meta("studies/embedding_ablation.py", argv, args.device),
        "tiny": args.tiny,
        "runs": [],
    }
    json_path = args.out / "embedding_ablation.json"
    for variant in variants:
        print(f"{variant} ...", flush=True)
        record["runs"].append(run_one(runs, variant, args))
        json_path.write_text(json.dumps(record, indent=2))
    for run in record["runs"]:  # counted after training, so a time limit loses only these
        run["counts"] = {
            "data": count(args, run["variant"], ELEMENTS[args.data]),
            "foundation": count(args, run["variant"], FOUNDATION_ELEMENTS),
        }
        trained, built = run.get("num_parameters"), run["counts"]["data"].get("num_parameters")
        if trained is not None and built is not None and trained != built:
            run["counts"]["data"]["note"] = f"trained model had {trained:,} parameters"
        json_path.write_text(json.dumps(record, indent=2))
    markdown = table(record)
    (args.out / "embedding_ablation.md").write_text(markdown)
    plot(record, args.out / "embedding_ablation.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
