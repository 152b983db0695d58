"""Graphs: the store's items equal per-configuration graphs; batching; ASE atoms."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from torch_geometric.loader import DataLoader

from macelab.data.configuration import Configuration
from macelab.data.graph import GRAPH_KEYS, atoms_to_graph, configuration_to_graph
from macelab.data.store import GraphStore
from macelab.data.xyz import atoms_to_configuration


def mixed_configurations() -> list[Configuration]:
    """Molecules of two sizes, a periodic crystal and a slab, with and without labels."""
    rng = np.random.default_rng(3)
    atoms_list = [molecule("H2O"), molecule("CH4"), molecule("H2O")]
    crystal = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    slab = bulk("Cu", "fcc", a=3.6, cubic=True)
    slab.pbc = (True, True, False)
    atoms_list += [crystal, slab]
    configs = []
    for k, atoms in enumerate(atoms_list):
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        config = atoms_to_configuration(atoms, source="mixed.xyz", index=k)
        if k != 1:
            config.energy = -float(k)
            config.forces = rng.normal(size=(len(atoms), 3))
        if k == 3:
            config.stress = np.eye(3) * 0.01
        configs.append(config)
    return configs


def assert_same_graph(a, b):
    assert a.num_nodes == b.num_nodes
    for key in GRAPH_KEYS:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def test_store_items_equal_per_configuration_graphs():
    configs = mixed_configurations()
    store = GraphStore.from_configurations(configs, 3.0)
    assert len(store) == len(configs)
    for k, config in enumerate(configs):
        assert_same_graph(store[k], configuration_to_graph(config, 3.0))
    assert store[1].has_energy.item() is False and store[1].energy.item() == 0.0
    assert store[3].has_stress.item() is True
    assert store[3].unit_shifts.abs().sum() > 0  # periodic images present


def test_select_and_state_round_trip():
    configs = mixed_configurations()
    store = GraphStore.from_configurations(configs, 3.0)
    subset = store.select([4, 0, 3])
    for position, k in enumerate([4, 0, 3]):
        assert_same_graph(subset[position], store[k])
    restored = GraphStore.from_state(subset.state())
    for k in range(len(subset)):
        assert_same_graph(restored[k], subset[k])
    assert store.select([]).num_atoms.numel() == 0


def test_batching_keeps_record_index_and_offsets_edges():
    store = GraphStore.from_configurations(mixed_configurations(), 3.0)
    batch = next(iter(DataLoader(store, batch_size=5)))
    assert batch.index.tolist() == [0, 1, 2, 3, 4]
    assert batch.cell.shape == (5, 3, 3) and batch.pbc.shape == (5, 3)
    assert batch.energy.shape == (5,) and batch.has_forces.tolist() == [1, 0, 1, 1, 1]
    senders, receivers = batch.edge_index
    assert torch.equal(batch.batch[senders], batch.batch[receivers])  # edges stay in a graph
    shifts = batch.unit_shifts.unsqueeze(1) @ batch.cell[batch.batch[senders]]  # [e, 1, 3]
    vectors = batch.positions[receivers] - batch.positions[senders] + shifts.squeeze(1)
    assert vectors.norm(dim=1).max() < 3.0


def test_atoms_to_graph_for_a_calculator():
    atoms = molecule("CH3CH2OH")
    atoms.calc = SinglePointCalculator(atoms, energy=-5.0, forces=np.ones((9, 3)))
    graph = atoms_to_graph(atoms, 4.0)
    assert not graph.has_energy.item()  # the calculator's results are not labels
    labelled = atoms_to_graph(atoms, 4.0, read_labels=True)
    assert labelled.has_energy.item() and labelled.energy.item() == -5.0
    assert graph.positions.dtype == torch.float64 and graph.num_nodes == 9
    periodic = atoms_to_graph(bulk("Si", "diamond", a=5.43), 3.0)
    assert periodic.pbc.all() and periodic.edge_index.shape[1] == 8  # 4 bonds x 2 atoms
    assert isinstance(atoms, Atoms)
