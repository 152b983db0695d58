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

from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Batch

from macelab.data.graph import atoms_to_graph
from macelab.errors import ConfigError

ACCELERATIONS = (None, "graphs", "compiled")


class MACECalculator(Calculator):
    """ASE calculator for a :class:`macelab.model.MACE`.

    Args:
        model: the macelab model (it is copied; the original is left as it is).
        device: torch device to run on, e.g. ``"cpu"`` or ``"cuda"``.
        precision: any precision name (``macelab.precision.precision_names()``): ``"64"``
            (float64, the default), ``"32"``, ``"tf32"``, ``"bf16-mixed"``, ``"16-mixed"``
            or a per-stage policy such as ``"policy_safe"``.
        accelerate: ``None`` (plain calls), ``"graphs"`` (CUDA graphs, ~7x faster for small
            molecules on an H100) or ``"compiled"`` (make_fx + Inductor + CUDA graphs, faster
            still, but each new shape bucket compiles for about a minute); CUDA only.
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
        accelerate: str | None = None,
        **kwargs: Any,
    ) -> None:
        from macelab.precision.inference import for_inference

        super().__init__(**kwargs)
        self.device = torch.device(device)
        if accelerate not in ACCELERATIONS:
            raise ConfigError(
                f"unknown accelerate={accelerate!r} for MACECalculator; choose None, "
                "'graphs' or 'compiled'."
            )
        if accelerate is not None and self.device.type != "cuda":
            raise ConfigError(
                f"accelerate={accelerate!r} needs a CUDA device, not {self.device}; use "
                "accelerate=None on the CPU."
            )
        self.model, self.context = for_inference(model, str(precision), self.device)
        self.dtype = self.model.dtype
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.r_max = float(self.model.r_max)
        self.accelerate = accelerate
        self._potentials: dict[bool, Any] = {}

    def _potential(self, periodic: bool):
        """The accelerated potential for molecules or periodic cells (built on first use)."""
        if periodic not in self._potentials:
            if self.accelerate == "graphs":
                from macelab.speed.cuda_graphs import GraphedPotential

                potential = GraphedPotential(
                    self.model, compute_stress=periodic, context=self.context
                )
            else:
                from macelab.speed.compiled import CompiledPotential

                potential = CompiledPotential(
                    self.model, compute_stress=periodic, context=self.context
                )
            self._potentials[periodic] = potential
        return self._potentials[periodic]

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
        if self.accelerate is not None:
            output = self._potential(periodic)(batch)
        else:
            with self.context():
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
