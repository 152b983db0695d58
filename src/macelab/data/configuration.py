"""One atomic configuration as read from a data file, before any graph is built.

A :class:`Configuration` keeps the reference labels in the units macelab uses (Å, eV,
eV/Å, eV/Å^3) together with where it came from (file and record), so that every later error
can say which frame of which file is at fault. Labels that a file does not carry are
``None``; nothing is ever filled in with zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from macelab.errors import DataError

MAX_ATOMIC_NUMBER = 118


@dataclass
class Configuration:
    """An atomic structure with optional energy, force and stress labels.

    Attributes:
        atomic_numbers: ``[n_atoms]`` integer atomic numbers.
        positions: ``[n_atoms, 3]`` Cartesian positions in Å.
        cell: ``[3, 3]`` lattice vectors as rows, in Å (zeros when there is none).
        pbc: periodic boundary flags along the three cell vectors.
        energy: total energy in eV, or ``None`` if the file has none.
        forces: ``[n_atoms, 3]`` forces in eV/Å, or ``None``.
        stress: ``[3, 3]`` stress in eV/Å^3 (ASE sign convention), or ``None``.
        source: the file the configuration was read from.
        index: the record (frame) index inside ``source``.
        config_type: the file's ``config_type`` label, if any.
        weight: a per-configuration loss weight.
        info: any further per-frame metadata (e.g. dihedral angles, temperature).
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: tuple[bool, bool, bool] = (False, False, False)
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    source: str = "<memory>"
    index: int = 0
    config_type: str | None = None
    weight: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    def validate(self) -> Configuration:
        """Check shapes, element numbers and finiteness; raise :class:`DataError` if wrong.

        Returns the configuration itself so that readers can write ``cfg.validate()``.
        """

        def fail(field_name: str, message: str) -> DataError:
            return DataError(message, file=self.source, record=self.index, field=field_name)

        n = self.atomic_numbers.shape[0] if self.atomic_numbers.ndim == 1 else -1
        if n <= 0:
            raise fail(
                "atomic_numbers",
                f"expected a non-empty 1-d array of atomic numbers, got shape "
                f"{tuple(self.atomic_numbers.shape)}; check that the record lists its atoms.",
            )
        z = self.atomic_numbers
        if np.any(z < 1) or np.any(z > MAX_ATOMIC_NUMBER):
            bad = sorted({int(v) for v in z[(z < 1) | (z > MAX_ATOMIC_NUMBER)]})
            raise fail(
                "atomic_numbers",
                f"atomic numbers {bad} are not chemical elements (1-{MAX_ATOMIC_NUMBER}); "
                "fix the species column of this record.",
            )
        checks: list[tuple[str, np.ndarray | None, tuple[int, ...]]] = [
            ("positions", self.positions, (n, 3)),
            ("forces", self.forces, (n, 3)),
            ("stress", self.stress, (3, 3)),
            ("cell", self.cell, (3, 3)),
        ]
        for name, array, shape in checks:
            if array is None:
                continue
            if array.shape != shape:
                raise fail(
                    name,
                    f"expected shape {shape} for {n} atoms, got {tuple(array.shape)}; the "
                    "record's arrays disagree on the number of atoms, fix or remove it.",
                )
            if not np.all(np.isfinite(array)):
                raise fail(
                    name,
                    f"contains {int(np.size(array) - np.isfinite(array).sum())} non-finite "
                    "value(s) (NaN or inf); fix or remove this record.",
                )
        if self.energy is not None and not np.isfinite(self.energy):
            raise fail("energy", f"energy is {self.energy}; fix or remove this record.")
        if any(self.pbc) and abs(np.linalg.det(self.cell)) < 1e-9:
            raise fail(
                "cell",
                "the record is periodic (pbc has True) but its cell has zero volume; give "
                'the Lattice or set pbc="F F F".',
            )
        return self
