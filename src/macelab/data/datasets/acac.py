"""Acetylacetone (AcAc), from BOTNet-datasets ``dataset_acac`` (MIT licence).

Training: ``train_300K`` or ``train_600K`` (500 configurations each, xTB MD, DFT labels).
Test sets, in the order the MACE paper tables them: ``test_MD_300K`` and ``test_MD_600K``
(650 each, energies and forces), ``test_H_transfer`` (15, NEB of the proton transfer) and
``test_dihedral`` (45, dihedral scan); the last two carry energies only, so they get energy
metrics only. E0s: ``isolated_atoms.xyz``. ``train_300K``, the tests and the isolated atoms ship
with macelab (packaged copy); ``train_600K`` comes from the data root or is downloaded.
"""

from __future__ import annotations

from macelab.data.datasets.base import DatasetParts, LoadOptions, load_file, load_test_sets
from macelab.errors import ConfigError

TRAIN_SETS = {
    "300K": "dataset_acac/train_300K.xyz",
    "600K": "dataset_acac/train_600K.xyz",
}
TEST_SETS = {
    "test_MD_300K": "dataset_acac/test_MD_300K.xyz",
    "test_MD_600K": "dataset_acac/test_MD_600K.xyz",
    "test_H_transfer": "dataset_acac/test_H_transfer.xyz",
    "test_dihedral": "dataset_acac/test_dihedral.xyz",
}
ISOLATED_ATOMS = "dataset_acac/isolated_atoms.xyz"


def train_file(train_set: str, choices: dict[str, str], dataset: str) -> str:
    """The file of a named training set (``300K`` or ``train_300K``)."""
    key = str(train_set).removeprefix("train_")
    if key not in choices:
        raise ConfigError(
            f"data.train_set={train_set!r} is not a {dataset} training set; choose one of "
            f"{', '.join(choices)}."
        )
    return choices[key]


def load(options: LoadOptions, *, train_set: str = "300K") -> DatasetParts:
    """The AcAc graphs: one training file, the four test sets, the isolated atoms."""
    train_path = train_file(train_set, TRAIN_SETS, "AcAc")
    tests, missing = load_test_sets(TEST_SETS, options)
    return DatasetParts(
        name=f"acac ({train_path.split('/')[-1].removesuffix('.xyz')})",
        train=load_file(train_path, options),
        valid=None,
        tests=tests,
        isolated_atoms=load_file(ISOLATED_ATOMS, options),
        missing=missing,
        files={"train": train_path, "isolated_atoms": ISOLATED_ATOMS, **TEST_SETS},
    )
