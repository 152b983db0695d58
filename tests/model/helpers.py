"""Helpers of the model tests: small models, real molecules, a periodic cell, rotations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from torch_geometric.data import Batch

from macelab.data.graph import AtomicGraph, atoms_to_graph
from macelab.dtypes import default_dtype
from macelab.model import MACE

ELEMENTS = [1, 6, 7, 8, 14]
E0 = [-13.6, -1029.0, -1485.0, -2041.0, -7800.0]
MOLECULES = {
    "3bpa": "dataset_3BPA/train_300K.xyz",  # 27 atoms, H C N O
    "acac": "dataset_acac/train_300K.xyz",  # 15 atoms, H C O
    "ethanol": "dataset_ethanol/train.xyz",  # 9 atoms, H C O
}


# The smallest model config build_model takes (every statistic given): for config tests.
TINY_CONFIG: dict[str, Any] = {
    "atomic_numbers": ELEMENTS,
    "atomic_energies": E0,
    "avg_num_neighbors": 8.0,
    "channels": 4,
    "max_L": 1,
    "max_ell": 2,
    "correlation": 2,
    "radial_mlp": [8],
    "scale": 1.0,
    "shift": 0.0,
}


@contextlib.contextmanager
def e3nn_without_script() -> Iterator[None]:
    """Build e3nn modules without TorchScript-compiling their generated code (2x faster
    construction, same numbers); the scripted default is exercised by the calculator and
    config tests."""
    import e3nn

    previous = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_script_fx=False)
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(**previous)


CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_model_config(tmp_path: Path, overrides: list[str]) -> Any:
    """The ``model`` node of conf/ composed through a minimal primary config of our own
    (independent of conf/train.yaml), with Hydra overrides such as ``model/size=small``."""
    from hydra import compose, initialize_config_dir

    (tmp_path / "primary.yaml").write_text(
        f"defaults:\n  - model: mace\n  - _self_\nhydra:\n  searchpath:\n    - file://{CONF}\n"
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        return compose(config_name="primary", overrides=overrides).model


def small_model(seed: int = 0, **overrides: Any) -> MACE:
    """A small float64 MACE with every feature of the paper's model (L up to 2, nu = 3)."""
    settings: dict[str, Any] = {
        "atomic_numbers": ELEMENTS,
        "atomic_energies": E0,
        "avg_num_neighbors": 8.0,
        "channels": 8,
        "max_L": 2,
        "max_ell": 3,
        "correlation": 3,
        "num_interactions": 2,
        "r_max": 5.0,
        "radial_mlp": [16, 16],
        "scale": 1.3,
        "shift": 0.2,
    }
    settings.update(overrides)
    torch.manual_seed(seed)
    with e3nn_without_script(), default_dtype(torch.float64):
        return MACE(**settings)


def read_molecule(name: str, index: int = 0) -> Atoms:
    """Frame ``index`` of a benchmark molecule, labels (energy, forces) included.

    AcAc is the copy shipped with macelab. 3BPA and ethanol come from ``MACELAB_DATA`` when
    it has them; otherwise a stand-in with the same elements is made here, so that the model
    tests run from a clean clone: for 3BPA (H C N O) the AcAc frame beside an acetamide
    molecule, for ethanol ASE's ethanol; each rattled by frame, with seeded labels.
    """
    from macelab.data.locate import data_root, locate

    root = data_root()
    if name == "acac" or (root is not None and (root / MOLECULES[name]).is_file()):
        return ase.io.read(locate(MOLECULES[name], download=False).path, index=index)
    return _stand_in(name, index)


def _stand_in(name: str, index: int) -> Atoms:
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(1000 + index)
    if name == "3bpa":
        atoms = read_molecule("acac", index)
        amide = molecule("CH3CONH2")
        amide.translate(atoms.get_center_of_mass() + np.array([6.0, 0.0, 0.0]))
        atoms = atoms + amide
    else:
        atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=index)
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=float(sum(E0[ELEMENTS.index(z)] for z in atoms.numbers) + rng.normal()),
        forces=rng.normal(scale=0.5, size=(len(atoms), 3)),
    )
    return atoms


def silicon_cell(seed: int = 0) -> Atoms:
    """A rattled, sheared 16-atom diamond Si cell with two C and one O substitutions."""
    atoms = bulk("Si", "diamond", a=5.43).repeat((2, 2, 2))[:16]
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.2, 0.1], [0.3, 0.0, 0.0], [0.0, 0.1, 0.0]]))
    atoms.numbers[[3, 7]] = 6
    atoms.numbers[11] = 8
    atoms.rattle(0.08, seed=seed)
    atoms.pbc = True
    return atoms


def graph(atoms: Atoms, r_max: float = 5.0) -> AtomicGraph:
    return atoms_to_graph(atoms, r_max)


def batch(structures: list[Atoms], r_max: float = 5.0) -> Batch:
    return Batch.from_data_list([graph(atoms, r_max) for atoms in structures])


def random_orthogonal(seed: int, reflect: bool) -> np.ndarray:
    """A random rotation (det +1), or a rotation times an inversion (det -1)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if reflect else q


def relative_error(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a = torch.as_tensor(a).detach().to(torch.float64)
    b = torch.as_tensor(b).detach().to(torch.float64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
