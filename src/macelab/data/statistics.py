"""Statistics of a training set that the model needs at construction.

The data module computes these once, on the training split only, and hands them to the
model builder (``macelab.model.build_model``); the model never recomputes them. They are
saved with every checkpoint so that a model can be rebuilt without the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from macelab.data.e0s import e0s_for_elements


@dataclass
class DatasetStatistics:
    """What the model needs to know about its training data.

    Attributes:
        atomic_numbers: the element table, sorted ascending (e.g. ``[1, 6, 8]``).
        atomic_energies: isolated-atom reference energies E0 in eV, one per element of
            ``atomic_numbers``, in the same order.
        avg_num_neighbors: mean number of neighbours within r_max per atom (the
            normalisation of the message sum in Eq. 8).
        mean_interaction_energy_per_atom: mean over training configurations of
            ``(E - sum_i E0(z_i)) / n_atoms``, eV (mace-torch's ``shift``).
        std_interaction_energy_per_atom: its standard deviation, eV.
        rms_forces: root mean square of all training force components, eV/Å (mace-torch's
            ``scale`` under its default ``rms_forces_scaling``).
        num_configurations: number of training configurations these were computed on.
        r_max: the cutoff the neighbour statistics were computed with, Å.
        e0_source: how E0s were obtained: ``"file"``, ``"config"`` or ``"least_squares"``.
    """

    atomic_numbers: list[int]
    atomic_energies: list[float]
    avg_num_neighbors: float
    mean_interaction_energy_per_atom: float
    std_interaction_energy_per_atom: float
    rms_forces: float
    num_configurations: int
    r_max: float
    e0_source: str = "least_squares"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DatasetStatistics:
        return cls(**values)


def compute_statistics(
    store: Any,
    atomic_energies: dict[int, float],
    *,
    e0_source: str,
) -> DatasetStatistics:
    """The statistics of a training set (a :class:`~macelab.data.store.GraphStore`).

    Args:
        store: the training graphs only (never validation or test data).
        atomic_energies: E0 per atomic number, covering every element of ``store``.
        e0_source: how the E0s were obtained (recorded in the result).

    Conventions (those of mace-torch, so the numbers match): the average number of
    neighbours is edges / atoms over the whole set; the interaction energy per atom of a
    configuration is ``(E - sum_i E0(z_i)) / n_atoms`` and its spread is the sample standard
    deviation (``torch.std``, ddof = 1); ``rms_forces`` is the RMS over all force components
    of configurations that have forces.
    """
    import torch

    elements = store.elements()
    e0_list = e0s_for_elements(atomic_energies, elements, e0_source)
    t = store.tensors
    n_atoms = store.num_atoms.to(torch.float64)  # [n_graphs]
    e0_table = torch.zeros(max(elements) + 1, dtype=torch.float64)
    e0_table[torch.as_tensor(elements)] = torch.as_tensor(e0_list, dtype=torch.float64)
    e0_sum = torch.zeros(len(store), dtype=torch.float64)
    e0_sum.index_add_(0, store.graph_of_atom, e0_table[t["atomic_numbers"]])  # [n_graphs]
    has_energy = t["has_energy"]
    per_atom = ((t["energy"] - e0_sum) / n_atoms)[has_energy]  # [n_with_energy]
    atom_has_forces = torch.repeat_interleave(t["has_forces"], store.num_atoms)
    forces = t["forces"][atom_has_forces]  # [n_atoms_with_forces, 3]
    mean = float(per_atom.mean()) if per_atom.numel() else 0.0
    std = float(per_atom.std()) if per_atom.numel() > 1 else 0.0
    rms_forces = float(torch.sqrt(torch.mean(forces**2))) if forces.numel() else 0.0
    return DatasetStatistics(
        atomic_numbers=list(elements),
        atomic_energies=e0_list,
        avg_num_neighbors=float(store.num_edges.sum()) / float(n_atoms.sum()),
        mean_interaction_energy_per_atom=mean,
        std_interaction_energy_per_atom=std,
        rms_forces=rms_forces,
        num_configurations=len(store),
        r_max=float(store.r_max),
        e0_source=e0_source,
        extra={
            "rms_interaction_energy_per_atom": (
                float(torch.sqrt(torch.mean(per_atom**2))) if per_atom.numel() else 0.0
            ),
            "num_atoms": int(n_atoms.sum()),
        },
    )
