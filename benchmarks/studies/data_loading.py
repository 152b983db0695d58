"""Loading and graph-building time, cold and cached, for the benchmark data.

For every 3BPA and AcAc file present (under ``--root`` / ``$MACELAB_DATA``, or the packaged
AcAc copy), and for a synthetic 100,000-frame file in rMD17's layout (the size of one rMD17
molecule, ethanol-like frames), this measures

* cold: parse the file and build every graph within r_max (nothing cached), split into
  parse and graph-building time, plus writing the cache entry;
* cached: the same load again, now from the graph cache (hash the file, read the entry);

and the whole data module ``setup("fit")`` for ``data=acac``, ``data=3bpa`` and ``data=rmd17``
(on the synthetic file with five published-style splits), cold and cached. Prints a Markdown
table (and writes it with ``--output``).

    MACELAB_DATA=../shared/data python benchmarks/studies/data_loading.py \\
        --output /tmp/data_loading.md
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

FRAMES_RMD17 = 100_000


def timed(function):
    """``(result, seconds)`` of one call."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def present_xyz_files(root: Path | None) -> list[tuple[str, Path]]:
    """(name under the data root, path) of every 3BPA and AcAc xyz file available here."""
    from macelab.data.datasets import acac, bpa
    from macelab.data.packaged import packaged_path

    relpaths = [
        *bpa.TRAIN_SETS.values(),
        *bpa.TEST_SETS.values(),
        bpa.ISOLATED_ATOMS,
        *acac.TRAIN_SETS.values(),
        *acac.TEST_SETS.values(),
        acac.ISOLATED_ATOMS,
    ]
    found = []
    for relpath in relpaths:
        if root is not None and (root / relpath).is_file():
            found.append((relpath, root / relpath))
        elif packaged_path(relpath) is not None:
            found.append((relpath, packaged_path(relpath)))
    return found


def write_rmd17_layout(folder: Path, root: Path | None, frames: int) -> Path:
    """An rMD17-layout data root with ``frames`` ethanol-like frames and five splits.

    Frames are the shared rMD17-derived ethanol configurations (or ASE's ethanol if the shared
    data is absent), each copied with a small random displacement, in kcal/mol as in rMD17.
    """
    from ase.build import molecule

    from macelab.data.units import KCAL_PER_MOL_IN_EV
    from macelab.data.xyz import read_xyz

    rng = np.random.default_rng(0)
    source = root / "dataset_ethanol" / "train.xyz" if root is not None else None
    if source is not None and source.is_file():
        configs = read_xyz(source)
        numbers = configs[0].atomic_numbers
        base = np.stack([c.positions for c in configs])  # [m, 9, 3]
        base_energy = np.array([c.energy for c in configs]) / KCAL_PER_MOL_IN_EV
    else:
        ethanol = molecule("CH3CH2OH")
        numbers, base = ethanol.numbers, ethanol.positions[None]
        base_energy = np.array([-97000.0])
    pick = rng.integers(0, len(base), size=frames)
    coords = base[pick] + rng.normal(scale=0.02, size=(frames, len(numbers), 3))
    npz_dir, split_dir = folder / "rmd17" / "npz_data", folder / "rmd17" / "splits"
    npz_dir.mkdir(parents=True)
    split_dir.mkdir(parents=True)
    np.savez(
        npz_dir / "rmd17_ethanol.npz",
        nuclear_charges=np.asarray(numbers),
        coords=coords,
        energies=base_energy[pick] + rng.normal(scale=0.5, size=frames),
        forces=rng.normal(scale=20.0, size=(frames, len(numbers), 3)),
    )
    for split in range(1, 6):
        order = rng.permutation(frames)
        for kind, part in (("train", order[:1000]), ("test", order[1000:2000])):
            (split_dir / f"index_{kind}_0{split}.csv").write_text("".join(f"{i}\n" for i in part))
    return folder


def bench_file(name: str, path: Path, r_max: float, cache_dir: Path) -> dict:
    """Cold (parse + graphs + cache write) and cached load of one xyz file."""
    from macelab.data.locate import LocatedFile
    from macelab.data.sources import load_xyz_store
    from macelab.data.store import GraphStore
    from macelab.data.xyz import read_xyz

    configs, parse_s = timed(lambda: read_xyz(path, name=name))
    _, graphs_s = timed(lambda: GraphStore.from_configurations(configs, r_max))
    located = LocatedFile(path, name, "root")
    store, cold_s = timed(lambda: load_xyz_store(located, r_max, cache_dir=cache_dir))
    _, cached_s = timed(lambda: load_xyz_store(located, r_max, cache_dir=cache_dir))
    return {
        "what": name,
        "frames": len(store),
        "edges": int(store.num_edges.sum()),
        "parse_s": parse_s,
        "graphs_s": graphs_s,
        "cold_s": cold_s,
        "cached_s": cached_s,
    }


def bench_rmd17_file(root: Path, r_max: float, cache_dir: Path) -> dict:
    """Cold and cached load of all 100,000 frames of the synthetic rMD17 npz."""
    from macelab.data.locate import LocatedFile
    from macelab.data.rmd17 import read_rmd17_npz
    from macelab.data.sources import load_rmd17_store
    from macelab.data.store import GraphStore

    path = root / "rmd17" / "npz_data" / "rmd17_ethanol.npz"
    arrays, parse_s = timed(lambda: read_rmd17_npz(path))
    _, graphs_s = timed(lambda: GraphStore.from_frames(arrays.frames(), r_max, source="x"))
    located = LocatedFile(path, "rmd17/npz_data/rmd17_ethanol.npz", "root")
    store, cold_s = timed(lambda: load_rmd17_store(located, r_max, cache_dir=cache_dir))
    _, cached_s = timed(lambda: load_rmd17_store(located, r_max, cache_dir=cache_dir))
    return {
        "what": f"rMD17 layout, {len(store):,} frames (synthetic ethanol)",
        "frames": len(store),
        "edges": int(store.num_edges.sum()),
        "parse_s": parse_s,
        "graphs_s": graphs_s,
        "cold_s": cold_s,
        "cached_s": cached_s,
    }


def bench_datamodule(label: str, r_max: float, cache_dir: Path, **kwargs) -> dict:
    """``setup("fit")`` of a fresh data module, with an empty cache and then a warm one."""
    from macelab.data.datamodule import MACEDataModule

    def setup():
        module = MACEDataModule(r_max=r_max, cache_dir=cache_dir, download=False, **kwargs)
        module.setup("fit")
        return module

    module, cold_s = timed(setup)
    _, cached_s = timed(setup)
    sizes = [len(module.train_dataset), len(module.val_dataset)]
    sizes += [len(s) for s in module.test_datasets.values()]
    return {
        "what": f"data module `{label}` setup (train/valid/tests)",
        "frames": sum(sizes),
        "edges": None,
        "parse_s": None,
        "graphs_s": None,
        "cold_s": cold_s,
        "cached_s": cached_s,
    }


def table(rows: list[dict]) -> str:
    def seconds(value):
        return "" if value is None else f"{value:.2f}"

    lines = [
        "| data | frames | edges | parse (s) | graphs (s) | cold load (s) | cached load (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        edges = "" if row["edges"] is None else f"{row['edges']:,}"
        lines.append(
            f"| {row['what']} | {row['frames']:,} | {edges} | {seconds(row['parse_s'])} | "
            f"{seconds(row['graphs_s'])} | {seconds(row['cold_s'])} | "
            f"{seconds(row['cached_s'])} |"
        )
    return "\n".join(lines)


def measure(root: Path | None, args: argparse.Namespace) -> list[dict]:
    """One full run: every file and data module, cold then cached, in a fresh cache."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name, path in present_xyz_files(root):
            rows.append(bench_file(name, path, args.r_max, scratch / "cache_files"))
        rmd17_root = write_rmd17_layout(scratch / "rmd17_root", root, args.frames)
        rows.append(bench_rmd17_file(rmd17_root, args.r_max, scratch / "cache_rmd17"))
        modules = [
            ("data=acac", {"dataset": "acac", "root": root}),
            ("data=3bpa", {"dataset": "3bpa", "root": root}),
            ("data=rmd17", {"dataset": "rmd17", "root": rmd17_root, "molecule": "ethanol"}),
        ]
        for label, kwargs in modules:
            if label == "data=3bpa" and root is None:
                continue
            rows.append(bench_datamodule(label, args.r_max, scratch / f"cache_{label}", **kwargs))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.environ.get("MACELAB_DATA"), help="data root")
    parser.add_argument("--r-max", type=float, default=5.0, help="cutoff in Å (MACE paper: 5)")
    parser.add_argument("--frames", type=int, default=FRAMES_RMD17, help="synthetic rMD17 size")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the table keeps the fastest")
    parser.add_argument("--output", type=Path, help="also write the table here")
    args = parser.parse_args()
    root = Path(args.root) if args.root else None

    import ase
    import torch
    import torch_geometric
    import vesin

    import macelab

    # Absent 3BPA test files are reported by the data module; here they would only repeat.
    logging.getLogger("macelab").setLevel(logging.ERROR)
    os.environ["MACELAB_OFFLINE"] = "1"  # measure local files, never the network
    runs = [measure(root, args) for _ in tqdm(range(args.repeat), desc="repeats")]
    rows = [
        {
            key: min(run[k][key] for run in runs)
            if row[key] is not None and key.endswith("_s")
            else row[key]
            for key in row
        }
        for k, row in enumerate(runs[0])
    ]
    versions = (
        f"macelab {macelab.__version__}, torch {torch.__version__}, ase {ase.__version__}, "
        f"vesin {vesin.__version__}, torch-geometric {torch_geometric.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}"
    )
    machine = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = (
        f"r_max = {args.r_max} Å; {machine}, load average {load} at the end; fastest of "
        f"{args.repeat} runs; {versions}\n\n{table(rows)}\n"
    )
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
