"""An ASE calculator around a macelab MACE model.

    from macelab.calculator import MACECalculator
    atoms.calc = MACECalculator(model, device="cpu", precision="64")
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

The calculator owns a copy of the model, cast to the requested precision and device, in eval
mode. Each new geometry (ASE reports changed positions, cell, pbc or numbers) gets a fresh
neighbour list from the data layer (:func:`macelab.data.graph.atoms_to_graph`), the same one
training uses. Stress is computed for fully periodic cells only.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Batch

from macelab.data.graph import atoms_to_graph
from macelab.errors import ConfigError

# Names of the precisions the calculator runs in (the precision issue adds more).
PRECISIONS: dict[str, torch.dtype] = {"64": torch.float64, "32": torch.float32}


def precision_dtype(precision: str | int) -> torch.dtype:
    """The dtype of a precision name (``"64"``, ``"32"``); ConfigError for unknown names."""
    name = str(precision)
    if name not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r} for MACECalculator; choose one of "
            f"{', '.join(repr(p) for p in PRECISIONS)}."
        )
    return PRECISIONS[name]


class MACECalculator(Calculator):
    """ASE calculator for a :class:`macelab.model.MACE`.

    Args:
        model: the macelab model (it is copied; the original is left as it is).
        device: torch device to run on, e.g. ``"cpu"`` or ``"cuda"``.
        precision: ``"64"`` (float64, the default) or ``"32"`` (float32).
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator`.

    Results: ``energy`` and ``free_energy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å^3,
    Voigt order, periodic cells only) and ``node_energies`` (eV per atom, E0 included).
    """

    implemented_properties: ClassVar[list[str]] = [
        "energy",
        "free_energy",
        "forces",
        "stress",
        "node_energies",
    ]

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        precision: str | int = "64",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dtype = precision_dtype(precision)
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.r_max = float(self.model.r_max)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        atoms = self.atoms
        self.model.elements.check(atoms.numbers)  # UnknownElementError names the elements
        graph = atoms_to_graph(atoms, self.r_max)
        batch = Batch.from_data_list([graph]).to(self.device)
        periodic = bool(np.all(atoms.pbc))
        output = self.model(batch, compute_forces=True, compute_stress=periodic)
        energy = float(output["energy"].detach().to(torch.float64).cpu()[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": _numpy(output["forces"]),
            "node_energies": _numpy(output["node_energy"]),
        }
        if periodic:
            self.results["stress"] = full_3x3_to_voigt_6_stress(_numpy(output["stress"])[0])


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float64).cpu().numpy()
