"""3BPA, from BOTNet-datasets ``dataset_3BPA`` (MIT licence).

Training: ``train_300K`` (500 configurations from 300 K MD) or ``train_mixedT`` (500 from
300, 600 and 1200 K). Test sets, in the order of the MACE paper's 3BPA table (300 K, 600 K,
1200 K, dihedral slices): ``test_300K``, ``test_600K``, ``test_1200K``, ``test_dih`` (the
DFT-optimised dihedral scans with beta at 120, 150 and 180 degrees). E0s: ``iso_atoms.xyz``.

The test files are 5-6 MB each and may be absent (they are in the shared copy's "not here"
list). Then each absent file is named with its URL in a warning and in the data module's
summary, and training and evaluation go on with what is present.
"""

from __future__ import annotations

from macelab.data.datasets.acac import train_file
from macelab.data.datasets.base import DatasetParts, LoadOptions, load_file, load_test_sets

TRAIN_SETS = {
    "300K": "dataset_3BPA/train_300K.xyz",
    "mixedT": "dataset_3BPA/train_mixedT.xyz",
}
TEST_SETS = {
    "test_300K": "dataset_3BPA/test_300K.xyz",
    "test_600K": "dataset_3BPA/test_600K.xyz",
    "test_1200K": "dataset_3BPA/test_1200K.xyz",
    "test_dih": "dataset_3BPA/test_dih.xyz",
}
ISOLATED_ATOMS = "dataset_3BPA/iso_atoms.xyz"


def load(options: LoadOptions, *, train_set: str = "300K") -> DatasetParts:
    """The 3BPA graphs: one training file, the test sets present, the isolated atoms."""
    train_path = train_file(train_set, TRAIN_SETS, "3BPA")
    tests, missing = load_test_sets(TEST_SETS, options)
    return DatasetParts(
        name=f"3bpa ({train_path.split('/')[-1].removesuffix('.xyz')})",
        train=load_file(train_path, options),
        valid=None,
        tests=tests,
        isolated_atoms=load_file(ISOLATED_ATOMS, options),
        missing=missing,
        files={"train": train_path, "isolated_atoms": ISOLATED_ATOMS, **TEST_SETS},
    )
