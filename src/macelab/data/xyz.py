"""Extended XYZ files -> :class:`Configuration` lists, every record validated.

ASE parses the frames; this module adds what a training code needs around it:

* Label keys are configurable (``energy_key``, ``forces_key``, ``stress_key``, the names
  mace-torch uses for the same options). ASE 3.29 moves ``energy``, ``forces`` and ``stress``
  into a ``SinglePointCalculator`` and leaves other names (``REF_energy``) in ``info`` /
  ``arrays``, so labels are looked up by key in all three places.
* The ``pbc`` flags decide periodicity: the benchmark molecules carry a 50 Å ``Lattice`` with
  ``pbc="F F F"`` and are not periodic.
* Bad input fails loudly with the file, the frame (and line) and the field: a truncated file,
  an unreadable atom line, a blank line in the middle (where ASE would silently stop reading),
  a label that is not a number, shapes that disagree, NaN or inf. Nothing is skipped.
* Frames with ``config_type`` ``IsolatedAtom`` / ``isolated_atom`` are returned like any
  other; :mod:`macelab.data.e0s` takes them out of a training set.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms
from ase.data import atomic_numbers as SYMBOL_TO_Z
from ase.io.extxyz import key_val_str_to_dict
from ase.stress import voigt_6_to_full_3x3_stress

from macelab.data.configuration import Configuration
from macelab.data.files import read_text
from macelab.errors import DataError


@dataclass(frozen=True)
class LabelKeys:
    """Names of the label fields in a file (``data.energy_key`` etc.)."""

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"

    def as_dict(self) -> dict[str, str]:
        return {"energy": self.energy, "forces": self.forces, "stress": self.stress}


DEFAULT_KEYS = LabelKeys()


def read_xyz(
    path: str | Path, keys: LabelKeys = DEFAULT_KEYS, *, name: str | None = None
) -> list[Configuration]:
    """Read every frame of an extended XYZ file (plain or gzip) as validated configurations.

    Args:
        path: the file.
        keys: the names of the energy, forces and stress fields.
        name: how errors and ``Configuration.source`` refer to the file (default: ``path``).

    Returns:
        ``list[Configuration]``, one per frame, in file order; ``index`` is the frame number.
    """
    name = str(path) if name is None else name
    text = read_text(path)
    lines = text.splitlines()
    frames = scan_frames(lines, name)
    if not frames:
        raise DataError(
            "the file holds no frames; check that it is an extended XYZ file.", file=name
        )
    configs: list[Configuration] = []
    iterator = ase.io.iread(io.StringIO(text), index=":", format="extxyz")
    for k, (start, n_atoms) in enumerate(frames):
        try:
            atoms = next(iterator)
        except Exception as exc:  # ASE raises many types; all mean "this frame is bad"
            raise _diagnose(lines, start, n_atoms, name, k, exc) from None
        configs.append(atoms_to_configuration(atoms, keys, source=name, index=k, line=start + 1))
    return configs


def scan_frames(lines: list[str], name: str) -> list[tuple[int, int]]:
    """Find each frame's first line (0-based) and atom count, checking the file's structure.

    ASE stops at the first blank line and reports a truncated last frame without saying
    where; this scan names the frame and the line instead. A frame with fewer atom lines
    than it declares swallows the next frame's first lines, so the mismatch only shows at the
    next frame; the error still names the frame that is short, and the line where it ends.
    """
    frames: list[tuple[int, int]] = []
    i, total = 0, len(lines)
    while i < total:
        header = lines[i].strip()
        if not header:
            if any(line.strip() for line in lines[i:]):
                raise DataError(
                    f"line {i + 1} is blank where frame {len(frames)} should start with its "
                    "number of atoms; remove the blank line (readers would stop there and "
                    "silently drop the rest of the file).",
                    file=name,
                    record=len(frames),
                    field="number of atoms",
                )
            break
        try:
            n_atoms = int(header)
        except ValueError:
            if frames:
                previous = _miscounted(lines, *frames[-1], name, len(frames) - 1)
                if previous is not None:
                    raise previous from None
            raise DataError(
                f"line {i + 1} should hold the number of atoms of this frame but reads "
                f"{header[:60]!r}; the previous frame has more atom lines than it declares, "
                "or the file is corrupted.",
                file=name,
                record=len(frames),
                field="number of atoms",
            ) from None
        if n_atoms < 1:
            raise DataError(
                f"line {i + 1} declares {n_atoms} atoms; a frame needs at least one.",
                file=name,
                record=len(frames),
                field="number of atoms",
            )
        if i + 2 + n_atoms > total:
            short = _miscounted(lines, i, n_atoms, name, len(frames))
            if short is not None:
                raise short
            raise DataError(
                f"the frame starting at line {i + 1} declares {n_atoms} atoms but the file "
                f"ends after {max(total - i - 2, 0)} atom line(s) (line {total}): the file is "
                "truncated. Re-download or regenerate it.",
                file=name,
                record=len(frames),
                field="atoms",
            )
        frames.append((i, n_atoms))
        i += n_atoms + 2
    return frames


def _miscounted(
    lines: list[str], start: int, n_atoms: int, name: str, frame: int
) -> DataError | None:
    """The error for a frame whose atom lines disagree with its declared count, if they do.

    Called when the line after the frame (as counted) is not a frame header. If one of the
    frame's atom lines is a bare integer, that is the next frame's atom count and the frame
    has fewer atom lines than it declares; if the line after it is an atom line, more.
    """
    atom_lines = range(start + 2, min(start + 2 + n_atoms, len(lines)))
    for k in atom_lines:
        if lines[k].strip().isdigit():
            return DataError(
                f"the frame starting at line {start + 1} declares {n_atoms} atoms but has only "
                f"{k - start - 2} atom line(s): line {k + 1} reads {lines[k].strip()!r}, the "
                "start of the next frame. Fix the atom count or add the missing atom lines.",
                file=name,
                record=frame,
                field="number of atoms",
            )
    after = start + 2 + n_atoms
    tokens = lines[after].split() if after < len(lines) else []
    if len(tokens) >= 4 and tokens[0] in SYMBOL_TO_Z:
        return DataError(
            f"the frame starting at line {start + 1} declares {n_atoms} atoms but line "
            f"{after + 1} after them is another atom line ({lines[after].strip()[:40]!r}). Fix "
            "the atom count or remove the extra lines.",
            file=name,
            record=frame,
            field="number of atoms",
        )
    return None


def _parse_properties(spec: str) -> list[tuple[str, str, int]]:
    """``"species:S:1:pos:R:3"`` -> ``[("species", "S", 1), ("pos", "R", 3)]``."""
    fields = spec.split(":")
    if len(fields) % 3:
        raise ValueError(f"Properties={spec!r} is not a list of name:type:count triples")
    return [(fields[j], fields[j + 1], int(fields[j + 2])) for j in range(0, len(fields), 3)]


def _diagnose(
    lines: list[str], start: int, n_atoms: int, name: str, frame: int, exc: Exception
) -> DataError:
    """Locate the line and field that made ASE fail on a frame (run only on failure)."""
    comment = lines[start + 1]
    try:
        spec = key_val_str_to_dict(comment).get("Properties", "species:S:1:pos:R:3")
        properties = _parse_properties(str(spec))
    except Exception as inner:
        return DataError(
            f"the comment line {start + 2} cannot be parsed ({inner}); fix its key=value pairs.",
            file=name,
            record=frame,
            field="comment line",
        )
    width = sum(count for _, _, count in properties)
    for row in range(n_atoms):
        line_no = start + 3 + row
        tokens = lines[line_no - 1].split()
        if len(tokens) != width:
            columns = ", ".join(f"{p}({c})" for p, _, c in properties)
            return DataError(
                f"line {line_no} has {len(tokens)} columns but Properties declares {width} "
                f"({columns}); the line is damaged or the frame is truncated.",
                file=name,
                record=frame,
                field="Properties",
            )
        column = 0
        for prop, kind, count in properties:
            for token in tokens[column : column + count]:
                problem = _bad_token(prop, kind, token)
                if problem:
                    return DataError(
                        f"line {line_no}: {problem}; fix or remove this frame.",
                        file=name,
                        record=frame,
                        field=prop,
                    )
            column += count
    return DataError(
        f"ASE could not parse the frame starting at line {start + 1}: {exc}",
        file=name,
        record=frame,
    )


def _bad_token(prop: str, kind: str, token: str) -> str | None:
    """Why ``token`` cannot be a value of an extended-XYZ column of type ``kind``, or None."""
    try:
        if kind == "R":
            float(token)
        elif kind == "I":
            int(token)
        elif kind == "L" and token not in {"T", "F", "True", "False"}:
            raise ValueError
    except ValueError:
        return f"{token!r} is not a valid {dict(R='real', I='integer', L='logical')[kind]} value"
    if prop == "species" and token not in SYMBOL_TO_Z and not token.isdigit():
        return f"{token!r} is not a chemical element symbol"
    return None


def label(atoms: Atoms, key: str) -> Any:
    """The value stored under ``key`` in ``atoms.info``, ``atoms.arrays`` or its calculator."""
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    calc = atoms.calc
    results = getattr(calc, "results", None) or {}
    return results.get(key)


def _as_array(value: Any, name: str, index: int, field: str, line: int | None) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        where = f" (frame starting at line {line})" if line else ""
        raise DataError(
            f"the value {str(value)[:60]!r}{where} is not numeric; fix the field or point "
            "the matching data.*_key option at the right one.",
            file=name,
            record=index,
            field=field,
        ) from None


def atoms_to_configuration(
    atoms: Atoms,
    keys: LabelKeys = DEFAULT_KEYS,
    *,
    source: str = "<memory>",
    index: int = 0,
    line: int | None = None,
) -> Configuration:
    """Convert one ``ase.Atoms`` to a validated :class:`Configuration` (labels by key)."""
    energy_value = label(atoms, keys.energy)
    energy = None
    if energy_value is not None:
        array = _as_array(energy_value, source, index, keys.energy, line)
        if array.ndim != 0:
            raise DataError(
                f"expected one number, got shape {array.shape}.",
                file=source,
                record=index,
                field=keys.energy,
            )
        energy = float(array)
    forces_value = label(atoms, keys.forces)
    forces = None
    if forces_value is not None:
        forces = _as_array(forces_value, source, index, keys.forces, line)
    stress_value = label(atoms, keys.stress)
    stress = None
    if stress_value is not None:
        stress = _as_array(stress_value, source, index, keys.stress, line)
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
        elif stress.shape == (9,):
            stress = stress.reshape(3, 3)
    skip = {keys.energy, keys.forces, keys.stress, "config_type", "config_weight"}
    info = {k: v for k, v in atoms.info.items() if k not in skip}
    config_type = atoms.info.get("config_type")
    config = Configuration(
        atomic_numbers=np.asarray(atoms.numbers, dtype=np.int64),
        positions=np.asarray(atoms.positions, dtype=np.float64),
        cell=np.asarray(atoms.cell.array, dtype=np.float64),
        pbc=tuple(bool(flag) for flag in atoms.pbc),
        energy=energy,
        forces=forces,
        stress=stress,
        source=source,
        index=index,
        config_type=None if config_type is None else str(config_type),
        weight=float(
            _as_array(atoms.info.get("config_weight", 1.0), source, index, "config_weight", line)
        ),
        info=info,
    )
    return config.validate()


def available_keys(atoms: Atoms) -> list[str]:
    """The label-like keys a frame carries (for messages about a wrong ``*_key``)."""
    names = set(atoms.info) | (set(atoms.arrays) - {"numbers", "positions"})
    results = getattr(atoms.calc, "results", None) or {}
    return sorted(names | set(results))


def first_frame_keys(path: str | Path) -> list[str]:
    """The per-frame and per-atom keys that the first frame of an xyz file declares.

    Used in messages about a wrong ``data.*_key``: it shows which names the file does use.
    """
    lines = read_text(path).splitlines()
    if len(lines) < 2:
        return []
    try:
        header = key_val_str_to_dict(lines[1])
        properties = _parse_properties(str(header.get("Properties", "species:S:1:pos:R:3")))
    except Exception:
        return []
    skip = {"Lattice", "Properties", "pbc", "species", "pos"}
    return sorted((set(header) | {name for name, _, _ in properties}) - skip)
