"""Molecular-dynamics energy traces: read an ``md.log``, or run a short NVE trajectory."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from macelab._compat import thermalize

_COLUMNS = {
    "time": "time_ps",
    "etot": "etot_eV",
    "epot": "epot_eV",
    "ekin": "ekin_eV",
    "t": "temperature_K",
    "temperature": "temperature_K",
}


def read_md_log(path: str | Path) -> pd.DataFrame:
    """An MD log as written by ASE's ``MDLogger`` (``Time[ps] Etot[eV] Epot[eV] Ekin[eV]
    T[K]``) or by ``python -m macelab.md``, with columns ``time_ps``, ``etot_eV``,
    ``epot_eV``, ``ekin_eV``, ``temperature_K``."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    header = re.split(r"\s+|,", lines[0].strip().lstrip("#").strip())
    names = []
    for column in header:
        key = re.sub(r"\[.*?\]|\(.*?\)", "", column).strip().lower().rstrip("_")
        key = key.split("_")[0] if key not in _COLUMNS else key
        names.append(_COLUMNS.get(key, column))
    rows = [re.split(r"\s+|,", line.strip()) for line in lines[1:] if not line.startswith("#")]
    frame = pd.DataFrame(rows, columns=names).apply(pd.to_numeric, errors="coerce")
    return frame.dropna(how="all")


def short_nve(
    calculator,
    atoms,
    steps: int = 50,
    timestep_fs: float = 0.5,
    temperature_K: float = 300.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Run ``steps`` of velocity-Verlet NVE with ASE and return the energy trace."""
    import numpy as np
    from ase import units
    from ase.md.velocitydistribution import Stationary
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calculator
    thermalize(atoms, temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    rows = []

    def record() -> None:
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        rows.append(
            {
                "time_ps": dynamics.get_time() / (1000 * units.fs),
                "epot_eV": epot,
                "ekin_eV": ekin,
                "etot_eV": epot + ekin,
                "temperature_K": atoms.get_temperature(),
            }
        )

    dynamics.attach(record, interval=1)
    record()
    dynamics.run(steps)
    return pd.DataFrame(rows)
