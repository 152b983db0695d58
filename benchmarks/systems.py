"""The systems the harness runs on: 3BPA molecules, boxes of liquid water, and their batches.

Molecules come from ``<data root>/dataset_3BPA/train_300K.xyz`` (27 atoms, DFT labels). If
that file is absent, the AcAc copy packaged with macelab is used, and if that is absent too a
27-atom molecule is synthesised; :class:`MoleculeSet` says which, and the record keeps it.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from macelab.data.configuration import Configuration
from macelab.data.graph import configuration_to_graph

THREE_BPA = Path("dataset_3BPA") / "train_300K.xyz"
THREE_BPA_ISO = Path("dataset_3BPA") / "iso_atoms.xyz"
WATER_MOLAR_MASS_G = 18.015
AVOGADRO = 6.02214076e23


@dataclass
class MoleculeSet:
    """Configurations to batch, their isolated-atom energies, and where both came from."""

    configs: list[Configuration]
    name: str
    source: str
    atomic_energies: dict[int, float]
    atomic_energies_source: str


def _atoms_to_configuration(atoms: ase.Atoms, source: str, index: int) -> Configuration:
    energy = forces = None
    if atoms.calc is not None:
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(), dtype=np.float64)
    return Configuration(
        atomic_numbers=np.asarray(atoms.numbers, dtype=np.int64),
        positions=np.asarray(atoms.positions, dtype=np.float64),
        cell=np.asarray(atoms.cell.array, dtype=np.float64),
        pbc=tuple(bool(p) for p in atoms.pbc),
        energy=energy,
        forces=forces,
        source=source,
        index=index,
    ).validate()


def _read_frames(path: Path) -> list[ase.Atoms]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as handle:
            return ase.io.read(io.StringIO(handle.read()), index=":", format="extxyz")
    return ase.io.read(path, index=":", format="extxyz")


def default_data_root() -> Path | None:
    """``$MACELAB_DATA`` if it names a folder."""
    root = os.environ.get("MACELAB_DATA")
    return Path(root) if root and Path(root).is_dir() else None


def load_molecules(
    data_root: Path | None, atomic_numbers: tuple[int, ...], n_atoms: int = 27
) -> MoleculeSet:
    """3BPA training molecules, else the packaged AcAc, else one synthesised molecule."""
    if data_root is not None and (data_root / THREE_BPA).is_file():
        path = data_root / THREE_BPA
        frames = _read_frames(path)
        configs = [_atoms_to_configuration(a, str(path), k) for k, a in enumerate(frames)]
        e0, e0_source = _isolated_energies(data_root / THREE_BPA_ISO, atomic_numbers)
        return MoleculeSet(configs, "3BPA", f"3BPA train_300K ({path})", e0, e0_source)
    packaged = _packaged_acac()
    if packaged is not None:
        frames = _read_frames(packaged)
        configs = [_atoms_to_configuration(a, str(packaged), k) for k, a in enumerate(frames)]
        iso = packaged.parent / "isolated_atoms.xyz.gz"
        e0, e0_source = _isolated_energies(iso, atomic_numbers)
        return MoleculeSet(
            configs,
            "AcAc",
            f"AcAc train_300K packaged with macelab ({packaged}); 3BPA not found under "
            f"data root {data_root}",
            e0,
            e0_source,
        )
    configs = [synthetic_molecule(n_atoms, seed=k) for k in range(64)]
    return MoleculeSet(
        configs,
        "synthetic",
        f"synthesised {n_atoms}-atom molecules (no 3BPA under {data_root}, no packaged AcAc)",
        dict.fromkeys(atomic_numbers, 0.0),
        "zeros (no isolated-atom file)",
    )


def _packaged_acac() -> Path | None:
    try:
        from macelab.data.packaged import packaged_path
    except ImportError:
        return None
    return packaged_path("dataset_acac/train_300K.xyz")


def _isolated_energies(path: Path, atomic_numbers: tuple[int, ...]) -> tuple[dict[int, float], str]:
    if not path.is_file():
        return dict.fromkeys(atomic_numbers, 0.0), f"zeros ({path} not found)"
    energies = dict.fromkeys(atomic_numbers, 0.0)
    found = []
    for atoms in _read_frames(path):
        if len(atoms) == 1 and int(atoms.numbers[0]) in energies:
            z = int(atoms.numbers[0])
            energy = atoms.info.get("energy")
            if energy is None and atoms.calc is not None:
                energy = atoms.get_potential_energy()
            energies[z] = float(energy)
            found.append(z)
    missing = sorted(set(atomic_numbers) - set(found))
    note = f"{path}" + (f" (no entry for Z={missing}: 0 eV)" if missing else "")
    return energies, note


def synthetic_molecule(n_atoms: int = 27, seed: int = 0) -> Configuration:
    """A 3BPA-like composition (C12 H12 N2 O for 27 atoms) at random, >= 1 Å apart, unlabelled."""
    rng = np.random.default_rng(seed)
    pattern = [6] * 12 + [1] * 12 + [7] * 2 + [8]
    numbers = np.array([pattern[k % len(pattern)] for k in range(n_atoms)], dtype=np.int64)
    radius = 1.1 * n_atoms ** (1 / 3) + 1.0
    positions: list[np.ndarray] = []
    while len(positions) < n_atoms:
        trial = rng.uniform(-radius, radius, 3)
        if all(np.linalg.norm(trial - p) >= 1.0 for p in positions):
            positions.append(trial)
    return Configuration(
        atomic_numbers=numbers,
        positions=np.array(positions),
        cell=np.zeros((3, 3)),
        source="<synthetic>",
        index=seed,
    ).validate()


def water_box(n_molecules: int, seed: int = 0, density_g_cm3: float = 1.0) -> Configuration:
    """Liquid-like water: ``n_molecules`` randomly oriented H2O on a jittered cubic grid,
    in a periodic cubic box at the given density (1 g/cm^3: 31.0 Å for 1000 molecules)."""
    rng = np.random.default_rng(seed)
    volume_A3 = n_molecules * WATER_MOLAR_MASS_G / AVOGADRO / density_g_cm3 * 1e24
    length = volume_A3 ** (1 / 3)
    per_side = int(np.ceil(n_molecules ** (1 / 3)))
    spacing = length / per_side
    sites = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    sites = sites[rng.permutation(len(sites))[:n_molecules]]
    oxygens = (sites + 0.5) * spacing + rng.uniform(-0.1, 0.1, (n_molecules, 3)) * spacing
    bond, half_angle = 0.9572, np.deg2rad(104.52) / 2
    local = np.array(
        [
            [0, 0, 0],
            [bond * np.sin(half_angle), 0, bond * np.cos(half_angle)],
            [-bond * np.sin(half_angle), 0, bond * np.cos(half_angle)],
        ]
    )
    positions = np.empty((n_molecules, 3, 3))
    for k in range(n_molecules):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        rotation = q * np.sign(np.diag(r))
        positions[k] = oxygens[k] + local @ rotation.T
    numbers = np.tile([8, 1, 1], n_molecules).astype(np.int64)
    return Configuration(
        atomic_numbers=numbers,
        positions=np.mod(positions.reshape(-1, 3), length),
        cell=np.eye(3) * length,
        pbc=(True, True, True),
        source=f"<water box: {n_molecules} H2O, {density_g_cm3} g/cm^3, {length:.2f} Å>",
        index=seed,
    ).validate()


def make_batch(configs: list[Configuration], r_max: float) -> Batch:
    """Graphs of ``configs`` collated by torch-geometric's DataLoader into one batch."""
    graphs = [configuration_to_graph(c, r_max) for c in configs]
    return next(iter(DataLoader(graphs, batch_size=len(graphs), shuffle=False)))


def describe(batch: Batch) -> dict[str, int]:
    """Counts of a batch for the record: graphs, atoms and edges."""
    return {
        "n_graphs": int(batch.num_graphs),
        "n_atoms": int(batch.num_nodes),
        "n_edges": int(batch.edge_index.shape[1]),
    }


def labels(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference energy [n_graphs] and forces [n_atoms, 3] of a batch (zeros if unlabelled)."""
    return batch.energy.reshape(-1), batch.forces
