"""From per-atom interaction energies to total energies (Eq. 13 and the reference energies).

    E = sum_i [ E0(z_i) + scale * sum_t E_i^(t) + shift ]

``E0`` are the isolated-atom reference energies of the training data (fixed), ``scale`` and
``shift`` normalise the learned interaction energy per atom (mace-torch's ``ScaleShiftMACE``;
by default fixed, from the training statistics). Without scale/shift (mace-torch's plain
``MACE``) ``E = sum_i E0(z_i) + sum_t E_i^(t)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class AtomicEnergies(torch.nn.Module):
    """``E0(z_i)`` per atom from the element indices; a fixed float64 buffer ``[n_elements]``.

    Reference energies are large (about -1,000 eV per carbon atom; a molecule's total is
    thousands of eV), and float32 resolves a total of -9,000 eV only to 1 meV, the size of
    the errors the paper reports. So the E0 table, ``E0 + interaction`` per atom and the
    total energy are float64 in every precision (a few additions per atom); the learned
    interaction energies, which are small, stay in the model's dtype.
    """

    def __init__(self, atomic_energies: Sequence[float]) -> None:
        super().__init__()
        values = [float(e) for e in atomic_energies]
        self.register_buffer("atomic_energies", torch.tensor(values, dtype=torch.float64))

    def _apply(self, fn, recurse: bool = True):
        """``module.to(dtype)`` casts every floating buffer: keep this one float64."""
        super()._apply(fn, recurse)
        self.atomic_energies = self.atomic_energies.to(torch.float64)
        return self

    def forward(self, element_index: torch.Tensor) -> torch.Tensor:  # [n] -> [n], float64
        return self.atomic_energies[element_index]


class ScaleShift(torch.nn.Module):
    """``scale * x + shift``; buffers, or parameters when ``trainable``."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0, trainable: bool = False) -> None:
        super().__init__()
        dtype = torch.get_default_dtype()
        scale_t = torch.tensor(float(scale), dtype=dtype)
        shift_t = torch.tensor(float(shift), dtype=dtype)
        if trainable:
            self.scale = torch.nn.Parameter(scale_t)
            self.shift = torch.nn.Parameter(shift_t)
        else:
            self.register_buffer("scale", scale_t)
            self.register_buffer("shift", shift_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.shift

    def extra_repr(self) -> str:
        return f"scale={float(self.scale):.6g}, shift={float(self.shift):.6g}"


class EnergySum(torch.nn.Module):
    """The "energy sum" stage: per-atom energies ``[n]`` -> per-graph totals ``[n_graphs]``,
    in the dtype of the per-atom energies."""

    def forward(
        self, node_energy: torch.Tensor, batch: torch.Tensor, num_graphs: int
    ) -> torch.Tensor:
        return node_energy.new_zeros(num_graphs).index_add(0, batch, node_energy)
