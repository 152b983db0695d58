"""Any user's extended XYZ files (``data=xyz``).

``data.train_file`` is required; ``data.valid_file`` is optional (else ``data.valid_fraction``
of the training file is held out); ``data.test_files`` maps a test-set name to a path.
Paths are absolute, relative to ``data.root``, or relative to the working directory. Label
names come from ``data.energy_key`` / ``forces_key`` / ``stress_key``, as in mace-torch.
Isolated atoms for ``e0s: file`` are frames of the training file with ``config_type``
``IsolatedAtom``, or the frames of ``data.e0s_file``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from macelab.data.checks import check_consistent_labels
from macelab.data.datasets.base import DatasetParts, LoadOptions, load_located
from macelab.data.locate import locate_user_file
from macelab.errors import ConfigError


def _test_files(test_files: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """``{name: path}`` from a mapping, or from a list (names are the file stems)."""
    if test_files is None:
        return {}
    if isinstance(test_files, Mapping):
        return {str(name): str(path) for name, path in test_files.items()}
    if isinstance(test_files, str):
        raise ConfigError(
            "data.test_files must map test-set names to paths, e.g. "
            "{test_300K: /data/test_300K.xyz}; got a single string."
        )
    named = {Path(str(path)).name.split(".")[0]: str(path) for path in test_files}
    if len(named) != len(test_files):
        raise ConfigError("data.test_files has two files with the same name; use a mapping.")
    return named


def load(
    options: LoadOptions,
    *,
    train_file: str | None = None,
    valid_file: str | None = None,
    test_files: Mapping[str, str] | Sequence[str] | None = None,
    e0s_file: str | None = None,
) -> DatasetParts:
    """The graphs of the user's training, validation, test and E0 files."""
    if not train_file:
        raise ConfigError(
            "data=xyz needs data.train_file (a path to an extended XYZ file); for example "
            "`data=xyz data.train_file=/path/train.xyz`."
        )
    root = options.root

    def load_user(path: str, what: str):
        return load_located(locate_user_file(path, root=root, what=what), options)

    tests = {}
    for name, path in _test_files(test_files).items():
        tests[name] = load_user(path, f"data.test_files.{name}")
        check_consistent_labels(tests[name], keys=options.keys)
    return DatasetParts(
        name=f"xyz ({Path(train_file).name})",
        train=load_user(train_file, "data.train_file"),
        valid=load_user(valid_file, "data.valid_file") if valid_file else None,
        tests=tests,
        isolated_atoms=load_user(e0s_file, "data.e0s_file") if e0s_file else None,
        files={
            "train": str(train_file),
            **({"valid": str(valid_file)} if valid_file else {}),
            **_test_files(test_files),
        },
    )
