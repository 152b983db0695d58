"""Statistics of a training set that the model needs at construction.

The data module computes these once, on the training split only, and hands them to the
model builder (``macelab.model.build_model``); the model never recomputes them. They are
saved with every checkpoint so that a model can be rebuilt without the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
