"""Small synthetic batches for testing losses and metrics without a model."""

from __future__ import annotations

import torch
from torch_geometric.data import Batch, Data


def synthetic_batch(
    num_atoms: list[int], *, has_forces: list[bool] | None = None, seed: int = 0
) -> Batch:
    """A batch of graphs with random reference labels (positions are irrelevant here)."""
    generator = torch.Generator().manual_seed(seed)
    has_forces = has_forces or [True] * len(num_atoms)
    graphs = []
    for index, (n, with_forces) in enumerate(zip(num_atoms, has_forces, strict=True)):
        graphs.append(
            Data(
                num_nodes=n,
                positions=torch.randn(n, 3, generator=generator, dtype=torch.float64),
                energy=torch.randn(1, generator=generator, dtype=torch.float64) * 10,
                forces=torch.randn(n, 3, generator=generator, dtype=torch.float64),
                stress=torch.zeros(1, 3, 3, dtype=torch.float64),
                has_energy=torch.tensor([True]),
                has_forces=torch.tensor([with_forces]),
                has_stress=torch.tensor([False]),
                weight=torch.ones(1, dtype=torch.float64),
                index=torch.tensor([index]),
            )
        )
    return Batch.from_data_list(graphs)


def synthetic_output(batch: Batch, seed: int = 1) -> dict[str, torch.Tensor]:
    """Predictions = labels + noise."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "energy": batch.energy
        + 0.01 * torch.randn(batch.num_graphs, generator=generator, dtype=torch.float64),
        "forces": batch.forces
        + 0.05 * torch.randn(batch.forces.shape, generator=generator, dtype=torch.float64),
        "stress": None,
    }


def tiny_module(atomic_numbers: list[int], atomic_energies: list[float], nonfinite: str = "stop"):
    """A one-interaction, 4-channel MACE LightningModule over the given elements (no data)."""
    from macelab.training.module import MACELightningModule

    statistics = {
        "atomic_numbers": list(atomic_numbers),
        "atomic_energies": list(atomic_energies),
        "avg_num_neighbors": 3.0,
        "mean_interaction_energy_per_atom": 0.0,
        "std_interaction_energy_per_atom": 1.0,
        "rms_forces": 1.0,
        "num_configurations": 1,
        "r_max": 5.0,
    }
    model = {"channels": 4, "max_L": 0, "correlation": 1, "num_interactions": 1}
    return MACELightningModule(model=model, statistics=statistics, nonfinite=nonfinite)
