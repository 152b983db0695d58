"""Identical structures in a data set: found, counted, kept together or dropped.

Two graphs are duplicates when their atomic numbers, positions, cell and periodic flags are
bitwise equal (the same frame written twice, or files concatenated with an overlap). A copy
in the training file and another in the validation split would make the validation error
measure memory instead of generalisation, so :func:`macelab.data.splits.train_valid_split`
keeps every copy on the side of its first occurrence, or ``data.drop_duplicates=true`` keeps
only the first. Either way the data module logs how many there are.
"""

from __future__ import annotations

import hashlib

import numpy as np

from macelab.data.store import GraphStore


def structure_keys(store: GraphStore) -> list[bytes]:
    """A digest per graph of its atomic numbers, positions, cell and periodic flags."""
    t = store.tensors
    z = t["atomic_numbers"].numpy()
    positions = t["positions"].numpy()
    cell = t["cell"].numpy()
    pbc = t["pbc"].numpy()
    ptr = t["node_ptr"].tolist()
    keys = []
    for g in range(len(store)):
        digest = hashlib.blake2b(digest_size=16)
        for array in (z[ptr[g] : ptr[g + 1]], positions[ptr[g] : ptr[g + 1]], cell[g], pbc[g]):
            digest.update(np.ascontiguousarray(array).tobytes())
        keys.append(digest.digest())
    return keys


def first_occurrences(store: GraphStore) -> np.ndarray:
    """``[n_graphs]``: for each graph, the position of the first graph identical to it.

    A graph without an earlier copy points at itself, so ``first == arange(n)`` marks the
    distinct structures.
    """
    first: dict[bytes, int] = {}
    return np.array(
        [first.setdefault(key, g) for g, key in enumerate(structure_keys(store))], dtype=np.int64
    )


def count_shared(store: GraphStore, reference: GraphStore) -> int:
    """How many graphs of ``store`` also occur in ``reference``."""
    known = set(structure_keys(reference))
    return sum(key in known for key in structure_keys(store))
