"""The revised MD17 data set (rMD17): npz files, published splits, the MACE protocol.

Archive layout (``rmd17.tar.bz2``, figshare DOI 10.6084/m9.figshare.12672038), which is also
the layout macelab expects under a data root::

    rmd17/npz_data/rmd17_<molecule>.npz    nuclear_charges [N], coords [F, N, 3] (Å),
                                           energies [F] (kcal/mol), forces [F, N, 3]
                                           (kcal/mol/Å); F = 100,000
    rmd17/splits/index_train_0<k>.csv      1000 frame indices, one per line, k = 1..5
    rmd17/splits/index_test_0<k>.csv       1000 frame indices, one per line

Energies and forces are converted to eV and eV/Å on reading with
:data:`macelab.data.units.KCAL_PER_MOL_IN_EV` (the one place the constant is stated).

MACE paper protocol (Batatia et al. 2022, arXiv 2206.07697, rMD17 section): 950 training and
50 validation configurations drawn from the published training split, test on the published
test split; :func:`mace_protocol_split` draws them reproducibly from a seed.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from macelab.data.files import read_text
from macelab.data.store import FrameArrays
from macelab.data.units import KCAL_PER_MOL_IN_EV
from macelab.errors import ConfigError, DataError

RMD17_MOLECULES = (
    "aspirin",
    "azobenzene",
    "benzene",
    "ethanol",
    "malonaldehyde",
    "naphthalene",
    "paracetamol",
    "salicylic",
    "toluene",
    "uracil",
)
RMD17_SPLITS = (1, 2, 3, 4, 5)
REQUIRED_ARRAYS = ("nuclear_charges", "coords", "energies", "forces")


def npz_relpath(molecule: str) -> str:
    """Path of a molecule's npz under a data root, e.g. ``rmd17/npz_data/rmd17_ethanol.npz``."""
    check_molecule(molecule)
    return f"rmd17/npz_data/rmd17_{molecule}.npz"


def split_relpath(kind: str, split: int) -> str:
    """Path of a published split under a data root, e.g. ``rmd17/splits/index_train_01.csv``."""
    if kind not in ("train", "test"):
        raise ValueError(f"kind must be 'train' or 'test', not {kind!r}")
    if split not in RMD17_SPLITS:
        raise ConfigError(f"data.split={split!r}: rMD17 has splits 1 to 5.")
    return f"rmd17/splits/index_{kind}_0{split}.csv"


def check_molecule(molecule: str) -> None:
    if molecule not in RMD17_MOLECULES:
        raise ConfigError(
            f"data.molecule={molecule!r} is not an rMD17 molecule; choose one of "
            f"{', '.join(RMD17_MOLECULES)}."
        )


@dataclass
class Rmd17Arrays:
    """One molecule's frames in macelab units.

    Attributes:
        atomic_numbers: ``[n_atoms]``.
        positions: ``[n_frames, n_atoms, 3]`` Å.
        energies: ``[n_frames]`` eV.
        forces: ``[n_frames, n_atoms, 3]`` eV/Å.
        source: the file they were read from.
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    source: str

    @property
    def num_frames(self) -> int:
        return int(self.energies.shape[0])

    def frames(self, indices: np.ndarray | None = None) -> FrameArrays:
        """The frames ``indices`` (all if ``None``) as :class:`FrameArrays` for a graph store."""
        idx = np.arange(self.num_frames) if indices is None else np.asarray(indices, np.int64)
        g, n = idx.shape[0], self.atomic_numbers.shape[0]
        return FrameArrays(
            atomic_numbers=np.tile(self.atomic_numbers.astype(np.int64), g),
            positions=self.positions[idx].reshape(g * n, 3),
            node_ptr=np.arange(g + 1, dtype=np.int64) * n,
            cell=np.zeros((g, 3, 3)),
            pbc=np.zeros((g, 3), dtype=bool),
            energy=self.energies[idx],
            has_energy=np.ones(g, dtype=bool),
            forces=self.forces[idx].reshape(g * n, 3),
            has_forces=np.ones(g, dtype=bool),
            stress=np.zeros((g, 3, 3)),
            has_stress=np.zeros(g, dtype=bool),
            weight=np.ones(g),
            index=idx,
        )


def _load_arrays(path: Path, name: str) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"is not a readable npz archive ({exc}); it is truncated or corrupted. "
            "Re-download it (delete the file to let macelab fetch it again).",
            file=name,
        ) from None
    with archive:
        missing = [key for key in REQUIRED_ARRAYS if key not in archive.files]
        if missing:
            raise DataError(
                f"lacks the array(s) {missing} (it has {sorted(archive.files)}); an rMD17 npz "
                f"holds {list(REQUIRED_ARRAYS)}.",
                file=name,
                field=missing[0],
            )
        arrays = {}
        for key in REQUIRED_ARRAYS:
            try:
                arrays[key] = np.asarray(archive[key])
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
                raise DataError(
                    f"the array cannot be read ({exc}); the file is truncated or corrupted. "
                    "Re-download it.",
                    file=name,
                    field=key,
                ) from None
    return arrays


def read_rmd17_npz(path: str | Path, *, name: str | None = None) -> Rmd17Arrays:
    """Read an rMD17 npz, check every array, and convert to eV and eV/Å.

    Raises :class:`DataError` naming the file, the frame and the array for missing arrays,
    shapes that disagree, non-finite values or invalid atomic numbers.
    """
    name = str(path) if name is None else name
    raw = _load_arrays(Path(path), name)
    z, coords, energies, forces = (raw[key] for key in REQUIRED_ARRAYS)
    if z.ndim != 1 or z.shape[0] == 0:
        raise DataError(
            f"expected a 1-d array of atomic numbers, got shape {z.shape}.",
            file=name,
            field="nuclear_charges",
        )
    if not np.issubdtype(z.dtype, np.number) or np.any(z < 1) or np.any(z > 118):
        raise DataError(
            "holds values that are not atomic numbers (1-118).", file=name, field="nuclear_charges"
        )
    n_atoms = z.shape[0]
    if coords.ndim != 3 or coords.shape[1:] != (n_atoms, 3):
        raise DataError(
            f"expected shape (n_frames, {n_atoms}, 3) for {n_atoms} atoms, got {coords.shape}.",
            file=name,
            field="coords",
        )
    n_frames = coords.shape[0]
    if n_frames == 0:
        raise DataError("holds no frames.", file=name, field="coords")
    expected = {"energies": (n_frames,), "forces": (n_frames, n_atoms, 3)}
    for key, shape in expected.items():
        if raw[key].shape != shape:
            raise DataError(
                f"expected shape {shape} to match coords {coords.shape}, got "
                f"{raw[key].shape}; the arrays disagree on the number of frames or atoms.",
                file=name,
                field=key,
            )
    for key in ("coords", "energies", "forces"):
        values = raw[key]
        finite = np.isfinite(values).reshape(n_frames, -1).all(axis=1)
        if not finite.all():
            frame = int(np.flatnonzero(~finite)[0])
            raise DataError(
                f"holds NaN or inf in {int((~finite).sum())} frame(s), the first being frame "
                f"{frame}; fix or regenerate the file.",
                file=name,
                record=frame,
                field=key,
            )
    return Rmd17Arrays(
        atomic_numbers=z.astype(np.int64),
        positions=coords.astype(np.float64),
        energies=energies.astype(np.float64) * KCAL_PER_MOL_IN_EV,
        forces=forces.astype(np.float64) * KCAL_PER_MOL_IN_EV,
        source=name,
    )


def read_split_indices(path: str | Path, num_frames: int, *, name: str | None = None) -> np.ndarray:
    """Read a published split file (one frame index per line) and check every index.

    Returns:
        ``np.ndarray`` ``[n]`` int64 frame indices, in file order.

    Raises :class:`DataError` (with the line) for a non-integer entry, an index outside
    ``0 .. num_frames - 1``, a repeated index, or an empty file.
    """
    name = str(path) if name is None else name
    indices: list[int] = []
    seen: dict[int, int] = {}
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        token = line.strip().strip(",")
        if not token:
            continue
        try:
            value = float(token)
            if not value.is_integer():
                raise ValueError
        except ValueError:
            raise DataError(
                f"{token[:40]!r} is not a frame index (an integer).",
                file=name,
                record=f"line {line_no}",
                field="index",
            ) from None
        index = int(value)
        if not 0 <= index < num_frames:
            raise DataError(
                f"index {index} is out of range: the data has {num_frames} frames "
                f"(0 to {num_frames - 1}); the split does not belong to this file.",
                file=name,
                record=f"line {line_no}",
                field="index",
            )
        if index in seen:
            raise DataError(
                f"index {index} repeats line {seen[index]}; a split lists each frame once.",
                file=name,
                record=f"line {line_no}",
                field="index",
            )
        seen[index] = line_no
        indices.append(index)
    if not indices:
        raise DataError("the split is empty: it lists no frame indices.", file=name, field="index")
    return np.asarray(indices, dtype=np.int64)


def mace_protocol_split(
    train_indices: np.ndarray, num_train: int, num_valid: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_train`` training and ``num_valid`` validation frames from a train split.

    The draw is a seeded permutation (``numpy.random.default_rng(seed)``), so the same seed
    gives the same frames on every machine; the two sets never overlap.
    """
    available = len(train_indices)
    if num_train < 1 or num_valid < 1:
        raise ConfigError(
            f"data.num_train={num_train} and data.num_valid={num_valid} must both be at "
            "least 1 (an empty split cannot be trained or validated on)."
        )
    if num_train + num_valid > available:
        raise ConfigError(
            f"data.num_train={num_train} and data.num_valid={num_valid} ask for "
            f"{num_train + num_valid} configurations, which exceeds the {available} frames of "
            f"the published training split; lower them to at most {available} together."
        )
    order = np.random.default_rng(seed).permutation(available)
    chosen = np.asarray(train_indices)[order]
    return chosen[:num_train], chosen[num_train : num_train + num_valid]
