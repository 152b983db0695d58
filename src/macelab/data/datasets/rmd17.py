"""rMD17 (Christensen and von Lilienfeld 2020), one molecule and one published split.

Files (under a data root, or downloaded as ``rmd17.tar.bz2``): ``rmd17/npz_data/
rmd17_<molecule>.npz`` and ``rmd17/splits/index_{train,test}_0<split>.csv``. Protocol of the
MACE paper: ``num_train`` (950) training and ``num_valid`` (50) validation configurations
drawn by ``seed`` from the published training split; the test set (``test``) is the published
test split (1000 configurations). Units are converted to eV and eV/Å on reading.
"""

from __future__ import annotations

from macelab.data.datasets.base import DatasetParts, LoadOptions
from macelab.data.locate import locate
from macelab.data.rmd17 import (
    check_molecule,
    mace_protocol_split,
    npz_relpath,
    read_split_indices,
    split_relpath,
)
from macelab.data.sources import load_rmd17_store, npz_num_frames

TEST_SET = "test"


def load(
    options: LoadOptions,
    *,
    molecule: str = "ethanol",
    split: int = 1,
    num_train: int = 950,
    num_valid: int = 50,
) -> DatasetParts:
    """Training, validation and test graphs of one rMD17 molecule and split."""
    check_molecule(molecule)
    found = {
        relpath: locate(
            relpath, root=options.root, download=options.download, cache_dir=options.cache_dir
        )
        for relpath in (
            npz_relpath(molecule),
            split_relpath("train", int(split)),
            split_relpath("test", int(split)),
        )
    }
    npz, train_split, test_split = found.values()
    num_frames = npz_num_frames(npz)
    train_pool = read_split_indices(train_split.path, num_frames, name=train_split.name)
    test_indices = read_split_indices(test_split.path, num_frames, name=test_split.name)
    train_indices, valid_indices = mace_protocol_split(
        train_pool, int(num_train), int(num_valid), options.seed
    )

    def frames(indices):
        return load_rmd17_store(
            npz,
            options.r_max,
            indices,
            cache_dir=options.cache_dir,
            use_cache=options.use_cache,
        )

    pool = frames(train_pool)  # one cache entry for the whole published training split
    position = {int(frame): k for k, frame in enumerate(train_pool)}
    return DatasetParts(
        name=f"rmd17 ({molecule}, split {split})",
        train=pool.select([position[int(i)] for i in train_indices]),
        valid=pool.select([position[int(i)] for i in valid_indices]),
        tests={TEST_SET: frames(test_indices)},
        files={
            "train": f"{npz.name} [{train_split.name}]",
            "valid": f"{npz.name} [{train_split.name}]",
            TEST_SET: f"{npz.name} [{test_split.name}]",
        },
    )
