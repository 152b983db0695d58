"""Atomic graphs: a :class:`Configuration` plus its neighbour list, as a torch-geometric
``Data`` object that batches with ``torch_geometric.loader.DataLoader``.

Fields of one graph (``n`` atoms, ``e`` edges); these names are the contract between the
data module and the model:

=================  ===============  ===========================================================
key                shape / dtype    meaning
=================  ===============  ===========================================================
``positions``      [n, 3] float64   Cartesian positions, Å
``atomic_numbers`` [n] int64        atomic numbers Z (the model maps them to its element table)
``edge_index``     [2, e] int64     row 0 sender j, row 1 receiver i (see ``neighbors.py``)
``unit_shifts``    [e, 3] float64   integer cell shifts of each edge
``cell``           [1, 3, 3] f64    lattice vectors as rows (zeros when not periodic)
``pbc``            [1, 3] bool      periodic flags
``energy``         [1] float64      reference energy, eV (0 where ``has_energy`` is False)
``forces``         [n, 3] float64   reference forces, eV/Å (0 where ``has_forces`` is False)
``stress``         [1, 3, 3] f64    reference stress, eV/Å^3 (0 where ``has_stress`` is False)
``has_energy``     [1] bool         whether ``energy`` is a label
``has_forces``     [1] bool         whether ``forces`` are labels
``has_stress``     [1] bool         whether ``stress`` is a label
``weight``         [1] float64      per-configuration loss weight
``index``          [1] int64        record index in the source file
=================  ===============  ===========================================================

Edge vectors are *not* stored: the model computes them from ``positions`` so that forces
(and stress, through the cell) are exact derivatives of the energy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch_geometric.data import Data

from macelab.data.configuration import Configuration
from macelab.data.neighbors import (
    DEFAULT_MIN_DISTANCE,
    closest_pair,
    neighbour_list,
    too_close_error,
)
from macelab.data.xyz import DEFAULT_KEYS, LabelKeys, atoms_to_configuration

GRAPH_KEYS = (
    "positions",
    "atomic_numbers",
    "edge_index",
    "unit_shifts",
    "cell",
    "pbc",
    "energy",
    "forces",
    "stress",
    "has_energy",
    "has_forces",
    "has_stress",
    "weight",
    "index",
)


class AtomicGraph(Data):
    """A torch-geometric ``Data`` with the fields above; ``num_nodes`` is the atom count.

    torch-geometric offsets every key that contains ``"index"`` by the node count when it
    batches graphs, which is right for ``edge_index`` but would corrupt the record ``index``;
    :meth:`__inc__` and :meth:`__cat_dim__` keep ``index`` as it is, concatenated along
    graphs.
    """

    def __inc__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if key == "index":
            return 0
        return super().__inc__(key, value, *args, **kwargs)

    def __cat_dim__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if key == "index":
            return 0
        return super().__cat_dim__(key, value, *args, **kwargs)


def configuration_to_graph(
    config: Configuration,
    r_max: float,
    *,
    min_distance: float | None = DEFAULT_MIN_DISTANCE,
    option: str = "min_distance",
) -> AtomicGraph:
    """Build the graph of one configuration with all neighbours within ``r_max`` Å.

    The cell of a configuration with no periodic direction is stored as zeros: a molecule in
    a 50 Å box with ``pbc="F F F"`` has no cell that matters.

    Two atoms closer than ``min_distance`` Å (``None`` or 0: no check) raise a
    :class:`~macelab.errors.DataError` naming them; ``option`` is how the message tells the
    user to change the threshold.
    """
    n = config.num_atoms
    edge_index, unit_shifts, lengths = neighbour_list(
        config.positions, r_max, config.cell, config.pbc, distances=True
    )
    if min_distance and lengths.size and lengths.min() < min_distance:
        raise too_close_error(
            closest_pair(edge_index, lengths),
            float(min_distance),
            option=option,
            atomic_numbers=config.atomic_numbers,
            file=config.source,
            record=config.index,
        )
    cell = np.asarray(config.cell) if any(config.pbc) else np.zeros((3, 3))
    f64 = torch.float64
    return AtomicGraph(
        num_nodes=n,
        positions=torch.as_tensor(config.positions, dtype=f64),
        atomic_numbers=torch.as_tensor(config.atomic_numbers, dtype=torch.int64),
        edge_index=torch.as_tensor(edge_index, dtype=torch.int64),
        unit_shifts=torch.as_tensor(unit_shifts, dtype=f64),
        cell=torch.as_tensor(cell, dtype=f64).reshape(1, 3, 3),
        pbc=torch.as_tensor(config.pbc, dtype=torch.bool).reshape(1, 3),
        energy=torch.tensor([0.0 if config.energy is None else config.energy], dtype=f64),
        forces=(
            torch.zeros(n, 3, dtype=f64)
            if config.forces is None
            else torch.as_tensor(config.forces, dtype=f64)
        ),
        stress=(
            torch.zeros(1, 3, 3, dtype=f64)
            if config.stress is None
            else torch.as_tensor(config.stress, dtype=f64).reshape(1, 3, 3)
        ),
        has_energy=torch.tensor([config.energy is not None]),
        has_forces=torch.tensor([config.forces is not None]),
        has_stress=torch.tensor([config.stress is not None]),
        weight=torch.tensor([config.weight], dtype=f64),
        index=torch.tensor([config.index], dtype=torch.int64),
    )


def atoms_to_graph(
    atoms: Atoms,
    r_max: float,
    *,
    read_labels: bool = False,
    keys: LabelKeys = DEFAULT_KEYS,
    min_distance: float | None = DEFAULT_MIN_DISTANCE,
    option: str = "min_distance",
) -> AtomicGraph:
    """The graph of an ``ase.Atoms``, e.g. for an ASE calculator.

    Positions, cell and pbc are taken as they are. Labels are read (by ``keys``) only with
    ``read_labels=True``: inside a calculator ``atoms.calc.results`` holds the model's own
    previous prediction, which must not come back as a reference label. Atoms closer than
    ``min_distance`` Å raise (see :func:`configuration_to_graph`).
    """
    if read_labels:
        config = atoms_to_configuration(atoms, keys, source="<ase.Atoms>", index=0)
    else:
        config = Configuration(
            atomic_numbers=np.asarray(atoms.numbers, dtype=np.int64),
            positions=np.asarray(atoms.positions, dtype=np.float64),
            cell=np.asarray(atoms.cell.array, dtype=np.float64),
            pbc=tuple(bool(flag) for flag in atoms.pbc),
            source="<ase.Atoms>",
        ).validate()
    return configuration_to_graph(config, r_max, min_distance=min_distance, option=option)
