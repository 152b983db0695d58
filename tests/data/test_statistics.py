"""Training-set statistics against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from macelab.data.packaged import packaged_path
from macelab.data.statistics import DatasetStatistics, compute_statistics
from macelab.data.store import GraphStore
from macelab.data.xyz import read_xyz

E0S = {1: -13.568422178253735, 6: -1026.8538996116154, 8: -2037.796869412825}


@pytest.fixture(scope="module")
def acac_subset():
    configs = read_xyz(packaged_path("dataset_acac/train_300K.xyz"))[:60]
    return configs, GraphStore.from_configurations(configs, 4.5)


def test_statistics_match_direct_computation(acac_subset):
    configs, store = acac_subset
    stats = compute_statistics(store, E0S, e0_source="file")
    neighbours = 0
    for c in configs:  # O(n^2) count of ordered pairs closer than r_max
        d = np.linalg.norm(c.positions[:, None] - c.positions[None], axis=-1)
        neighbours += int(((d < 4.5) & ~np.eye(c.num_atoms, dtype=bool)).sum())
    assert stats.avg_num_neighbors == pytest.approx(neighbours / sum(c.num_atoms for c in configs))
    per_atom = np.array(
        [(c.energy - sum(E0S[int(z)] for z in c.atomic_numbers)) / c.num_atoms for c in configs]
    )
    assert stats.mean_interaction_energy_per_atom == pytest.approx(per_atom.mean(), rel=1e-12)
    assert stats.std_interaction_energy_per_atom == pytest.approx(per_atom.std(ddof=1), rel=1e-9)
    forces = np.concatenate([c.forces for c in configs])
    assert stats.rms_forces == pytest.approx(np.sqrt(np.mean(forces**2)), rel=1e-12)
    assert stats.atomic_numbers == [1, 6, 8]
    assert stats.atomic_energies == [E0S[1], E0S[6], E0S[8]]
    assert stats.num_configurations == 60 and stats.r_max == 4.5


def test_statistics_round_trip_through_a_dict(acac_subset):
    _, store = acac_subset
    stats = compute_statistics(store, E0S, e0_source="file")
    assert DatasetStatistics.from_dict(stats.to_dict()) == stats


@pytest.mark.mace_torch
def test_statistics_agree_with_mace_torch(acac_subset):
    """The same numbers as mace-torch's own functions on the same configurations."""
    pytest.importorskip("mace")
    from mace import data as mace_data
    from mace.modules.utils import (
        compute_avg_num_neighbors,
        compute_mean_std_atomic_inter_energy,
    )
    from mace.tools import AtomicNumberTable, torch_geometric

    configs, store = acac_subset
    table = AtomicNumberTable([1, 6, 8])
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # mace-torch builds its tensors in the default dtype
    try:
        mace_configs = [
            mace_data.Configuration(
                atomic_numbers=c.atomic_numbers,
                positions=c.positions,
                properties={"energy": c.energy, "forces": c.forces},
                property_weights={"energy": 1.0, "forces": 1.0},
                cell=np.zeros((3, 3)),
                pbc=(False, False, False),
            )
            for c in configs
        ]
        graphs = [
            mace_data.AtomicData.from_config(c, z_table=table, cutoff=4.5) for c in mace_configs
        ]
        loader = torch_geometric.dataloader.DataLoader(graphs, batch_size=7)
        e0_array = np.array([E0S[1], E0S[6], E0S[8]])
        mean, std = compute_mean_std_atomic_inter_energy(loader, e0_array)
        avg_num_neighbors = compute_avg_num_neighbors(loader)
    finally:
        torch.set_default_dtype(default)
    ours = compute_statistics(store, E0S, e0_source="file")
    assert avg_num_neighbors == pytest.approx(ours.avg_num_neighbors, rel=1e-6)  # float32
    assert mean == pytest.approx(ours.mean_interaction_energy_per_atom, rel=1e-10)
    assert std == pytest.approx(ours.std_interaction_energy_per_atom, rel=1e-8)
