"""What every dataset module returns, and the options it is given.

A dataset module (``acac.py``, ``bpa.py``, ``rmd17.py``, ``xyz.py``) says which files form
the training, validation and test sets and what the test sets are called; it returns their
graphs in a :class:`DatasetParts`. The data module then does what is common to all: E0s,
isolated-atom removal, the train/validation split, statistics and element checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from macelab.data.checks import check_consistent_labels
from macelab.data.locate import LocatedFile, locate
from macelab.data.sources import load_xyz_store
from macelab.data.store import GraphStore
from macelab.data.xyz import DEFAULT_KEYS, LabelKeys
from macelab.errors import MissingDataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """The data-module settings a dataset module needs.

    Attributes:
        root: the data root (``data.root`` / ``MACELAB_DATA``), or None.
        r_max: the graph cutoff, Å.
        keys: the label keys (``data.energy_key`` etc.).
        seed: the split seed.
        cache_dir: where downloads and cached graphs go (None: the default cache).
        use_cache: whether to use the graph cache.
        download: whether missing official files may be downloaded.
    """

    root: Path | None
    r_max: float
    keys: LabelKeys = DEFAULT_KEYS
    seed: int = 0
    cache_dir: Path | None = None
    use_cache: bool = True
    download: bool = True


@dataclass(frozen=True)
class MissingFile:
    """A test file that is absent: the test set's name, the file, and the full message."""

    name: str
    relpath: str
    message: str


@dataclass
class DatasetParts:
    """The graphs of one benchmark, before E0s and splitting.

    Attributes:
        name: a short description, e.g. ``"acac (train_300K)"``.
        train: the training file's graphs (isolated atoms still in, if it has any).
        valid: a separate validation set, or None to split one off ``train``.
        tests: named test sets, in the order the paper tables them.
        isolated_atoms: graphs of a separate isolated-atom file (for ``e0s: file``), or None.
        missing: one message per test file that is absent (the rest still runs).
        files: which file each split came from, for the summary.
    """

    name: str
    train: GraphStore
    valid: GraphStore | None
    tests: dict[str, GraphStore]
    isolated_atoms: GraphStore | None = None
    missing: list[MissingFile] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def load_file(relpath: str, options: LoadOptions) -> GraphStore:
    """Locate a benchmark xyz file (root, packaged, cache, web) and load its graphs."""
    located = locate(
        relpath, root=options.root, download=options.download, cache_dir=options.cache_dir
    )
    return load_located(located, options)


def load_located(located: LocatedFile, options: LoadOptions) -> GraphStore:
    return load_xyz_store(
        located,
        options.r_max,
        options.keys,
        cache_dir=options.cache_dir,
        use_cache=options.use_cache,
    )


def load_test_sets(
    files: Mapping[str, str], options: LoadOptions
) -> tuple[dict[str, GraphStore], list[MissingFile]]:
    """Load named benchmark test files; an absent one is reported, not fatal.

    Returns the test sets that are present (in the order of ``files``) and one message per
    absent file that names it and says where to get it.
    """
    tests: dict[str, GraphStore] = {}
    missing: list[MissingFile] = []
    for name, relpath in files.items():
        try:
            store = load_file(relpath, options)
        except MissingDataError as exc:
            message = f"test set '{name}' is skipped: {exc}"
            log.warning(message)
            missing.append(MissingFile(name, relpath, message))
            continue
        check_consistent_labels(store, keys=options.keys)
        tests[name] = store
    return tests, missing
