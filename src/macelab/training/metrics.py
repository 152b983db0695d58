"""Energy and force errors in the MACE paper's units, exact under DDP.

:class:`EnergyForceMetrics` accumulates sums of absolute and squared errors and the counts
behind them (in float64), so that the MAE and RMSE over a whole data set come out exactly
however the set is split across batches and ranks (torchmetrics sums the states over
ranks). Configurations without forces (``has_forces`` False) add to the energy metrics
only; force metrics of a set without any forces are absent, not zero.

Names: ``energy_mae_meV`` / ``energy_rmse_meV`` (per structure),
``energy_per_atom_mae_meV`` / ``energy_per_atom_rmse_meV``, ``forces_mae_meV_per_A`` /
``forces_rmse_meV_per_A`` (over force components), plus ``num_structures`` and
``num_force_components``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from macelab.data.units import EV_IN_MEV

_SUMS = (
    "energy_abs",
    "energy_sq",
    "energy_per_atom_abs",
    "energy_per_atom_sq",
    "num_energies",
    "forces_abs",
    "forces_sq",
    "num_force_components",
    "stress_abs",
    "stress_sq",
    "num_stress_components",
)


class EnergyForceMetrics(Metric):
    """MAE and RMSE of energies (per structure and per atom), forces and stress."""

    full_state_update = False
    higher_is_better = False

    def __init__(self) -> None:
        super().__init__()
        for name in _SUMS:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _apply(self, fn, *args, **kwargs):
        # Keep the sums in float64 when Lightning casts the module to a lower precision.
        result = super()._apply(fn, *args, **kwargs)
        for name in _SUMS:
            value = getattr(result, name)
            if isinstance(value, Tensor) and value.dtype != torch.float64:
                setattr(result, name, value.to(torch.float64))
        return result

    def update(self, output: dict[str, Tensor | None], batch) -> None:  # type: ignore[override]
        f64 = torch.float64
        energy = output["energy"].detach().to(f64)
        num_atoms = (batch.ptr[1:] - batch.ptr[:-1]).to(f64)
        has_energy = batch.has_energy
        error = (energy - batch.energy.to(f64))[has_energy]
        per_atom = error / num_atoms[has_energy]
        self.energy_abs += error.abs().sum()
        self.energy_sq += error.square().sum()
        self.energy_per_atom_abs += per_atom.abs().sum()
        self.energy_per_atom_sq += per_atom.square().sum()
        self.num_energies += has_energy.sum().to(f64)

        forces = output.get("forces")
        if forces is not None:
            atom_mask = batch.has_forces[batch.batch]
            force_error = (forces.detach().to(f64) - batch.forces.to(f64))[atom_mask]
            self.forces_abs += force_error.abs().sum()
            self.forces_sq += force_error.square().sum()
            self.num_force_components += float(force_error.numel())

        stress = output.get("stress")
        if stress is not None:
            stress_error = (stress.detach().to(f64) - batch.stress.to(f64))[batch.has_stress]
            self.stress_abs += stress_error.abs().sum()
            self.stress_sq += stress_error.square().sum()
            self.num_stress_components += float(stress_error.numel())

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        """The metrics in meV and meV/Å (meV/Å^3 for stress); absent where no labels."""
        results: dict[str, float] = {"num_structures": int(self.num_energies.item())}
        n_e = float(self.num_energies)
        if n_e > 0:
            results["energy_mae_meV"] = EV_IN_MEV * float(self.energy_abs) / n_e
            results["energy_rmse_meV"] = EV_IN_MEV * math.sqrt(float(self.energy_sq) / n_e)
            results["energy_per_atom_mae_meV"] = EV_IN_MEV * float(self.energy_per_atom_abs) / n_e
            results["energy_per_atom_rmse_meV"] = EV_IN_MEV * math.sqrt(
                float(self.energy_per_atom_sq) / n_e
            )
        n_f = float(self.num_force_components)
        results["num_force_components"] = int(n_f)
        if n_f > 0:
            results["forces_mae_meV_per_A"] = EV_IN_MEV * float(self.forces_abs) / n_f
            results["forces_rmse_meV_per_A"] = EV_IN_MEV * math.sqrt(float(self.forces_sq) / n_f)
        n_s = float(self.num_stress_components)
        if n_s > 0:
            results["stress_mae_meV_per_A3"] = EV_IN_MEV * float(self.stress_abs) / n_s
            results["stress_rmse_meV_per_A3"] = EV_IN_MEV * math.sqrt(float(self.stress_sq) / n_s)
        return results
