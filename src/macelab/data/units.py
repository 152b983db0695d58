"""Units. macelab works in Å, eV and eV/Å everywhere; conversions happen once, on reading.

rMD17 stores energies in kcal/mol and forces in kcal/mol/Å. The factor below is exact
given CODATA 2018: 1 kcal = 4184 J (thermochemical calorie, exact), the Avogadro constant
6.02214076e23 /mol (exact) and the elementary charge 1.602176634e-19 C (exact), so
1 kcal/mol = 4184 / (6.02214076e23 * 1.602176634e-19) eV.
"""

from __future__ import annotations

KCAL_PER_MOL_IN_EV: float = 4184.0 / (6.02214076e23 * 1.602176634e-19)
"""1 kcal/mol in eV (= 0.0433641043...)."""

EV_IN_MEV: float = 1000.0
"""Metrics are reported in meV and meV/Å, as in the MACE paper."""
