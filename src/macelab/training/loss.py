"""The training loss of MACE: weighted errors of energy per atom, forces and stress.

Following mace-torch's ``weighted`` loss (and the MACE paper, Sec. 5):

    L = λ_E / B Σ_b w_b ((E_b - Ê_b) / N_b)^2
      + λ_F / (3 N) Σ_i |F_i - F̂_i|^2
      + λ_σ / (9 B) Σ_b |σ_b - σ̂_b|^2

With ``energy_per_atom=False`` the energy term uses whole-structure energies,
λ_E / B Σ_b w_b (E_b - Ê_b)^2, as the MACE paper writes its loss (App. A.5.1, Eq. 15).

Each term averages only over configurations that carry that label (the ``has_*`` masks of
the graph), so a test set with energies but no forces contributes no force error. With
``kind="huber"`` the squared error is replaced by the Huber function with threshold
``huber_delta`` (eV per atom, eV/Å, eV/Å^3 respectively), which is less sensitive to
outliers in large, noisy data sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LossWeights:
    """λ_E, λ_F, λ_σ of the loss above."""

    energy: float = 1.0
    forces: float = 100.0
    stress: float = 0.0


def _error(prediction: Tensor, target: Tensor, kind: str, delta: float) -> Tensor:
    if kind == "mse":
        return torch.square(prediction - target)
    if kind == "huber":
        return torch.nn.functional.huber_loss(prediction, target, reduction="none", delta=delta)
    raise ValueError(f"unknown loss kind {kind!r}; use 'mse' or 'huber'")


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over entries where ``mask`` is True (0 if there are none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


class EnergyForcesLoss(torch.nn.Module):
    """Weighted energy-per-atom, force and stress loss (see the module docstring)."""

    def __init__(
        self,
        weights: LossWeights | None = None,
        kind: str = "mse",
        huber_delta: float = 0.01,
        energy_per_atom: bool = True,
    ) -> None:
        super().__init__()
        self.weights = weights or LossWeights()
        self.energy_per_atom = energy_per_atom
        self.kind = kind
        self.huber_delta = huber_delta
        _error(torch.zeros(1), torch.zeros(1), kind, huber_delta)  # validate kind early

    def forward(self, output: dict[str, Tensor | None], batch) -> dict[str, Tensor]:
        """Return ``{"loss", "energy", "forces", "stress"}`` (the weighted total and parts)."""
        energy = output["energy"]
        dtype = energy.dtype
        num_atoms = (batch.ptr[1:] - batch.ptr[:-1]).to(dtype)
        if not self.energy_per_atom:
            num_atoms = torch.ones_like(num_atoms)
        graph_weight = batch.weight.to(dtype)

        energy_error = _error(
            energy / num_atoms, batch.energy.to(dtype) / num_atoms, self.kind, self.huber_delta
        )
        terms = {"energy": _masked_mean(graph_weight * energy_error, batch.has_energy)}

        forces = output.get("forces")
        if forces is not None and self.weights.forces != 0.0:
            atom_mask = batch.has_forces[batch.batch]  # [n_atoms]
            force_error = _error(forces, batch.forces.to(dtype), self.kind, self.huber_delta)
            force_error = force_error.mean(dim=-1) * graph_weight[batch.batch]  # [n_atoms]
            terms["forces"] = _masked_mean(force_error, atom_mask)
        else:
            terms["forces"] = energy.new_zeros(())

        stress = output.get("stress")
        if stress is not None and self.weights.stress != 0.0:
            stress_error = _error(stress, batch.stress.to(dtype), self.kind, self.huber_delta)
            stress_error = stress_error.mean(dim=(-1, -2)) * graph_weight
            terms["stress"] = _masked_mean(stress_error, batch.has_stress)
        else:
            terms["stress"] = energy.new_zeros(())

        terms["loss"] = (
            self.weights.energy * terms["energy"]
            + self.weights.forces * terms["forces"]
            + self.weights.stress * terms["stress"]
        )
        return terms
