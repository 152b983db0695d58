"""Checks across configurations that no single record can make on its own.

Each raises :class:`~macelab.errors.DataError` naming the file, the record and the field,
with what to do: an element the model's element table does not know, a label that a split
needs but a record lacks, a label present in some records of a file and absent in others,
an empty split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from ase.data import chemical_symbols

from macelab.data.configuration import Configuration
from macelab.data.store import GraphStore
from macelab.data.xyz import DEFAULT_KEYS, LabelKeys
from macelab.errors import DataError


def _records(items: GraphStore | Iterable) -> Iterable[tuple[str, int, np.ndarray]]:
    """(source, record index, atomic numbers) of each configuration or graph."""
    if isinstance(items, GraphStore):
        z = items.tensors["atomic_numbers"].numpy()
        ptr = items.tensors["node_ptr"].tolist()
        for g, record in enumerate(items.tensors["index"].tolist()):
            yield items.source, record, z[ptr[g] : ptr[g + 1]]
        return
    for item in items:
        if isinstance(item, Configuration):
            yield item.source, item.index, np.asarray(item.atomic_numbers)
        else:  # an AtomicGraph (or any object with the graph fields)
            source = str(getattr(item, "source", "<graphs>"))
            yield source, int(item.index.reshape(-1)[0]), item.atomic_numbers.numpy()


def check_elements(
    items: GraphStore | Sequence[Configuration] | Iterable, atomic_numbers: Sequence[int]
) -> None:
    """Raise if any configuration holds an element outside ``atomic_numbers``.

    Args:
        items: a graph store, configurations, or atomic graphs.
        atomic_numbers: the model's element table (e.g. ``statistics.atomic_numbers``).
    """
    table = np.asarray(sorted(int(z) for z in atomic_numbers), dtype=np.int64)
    for source, record, z in _records(items):
        unknown = np.setdiff1d(z, table)
        if unknown.size:
            names = ", ".join(f"{chemical_symbols[int(u)]} (Z={int(u)})" for u in unknown)
            known = ", ".join(chemical_symbols[int(u)] for u in table)
            raise DataError(
                f"holds {names}, which the model's element table [{known}] does not know. "
                "A model can only predict elements it was built for: remove such "
                "configurations, or train on data that contains these elements.",
                file=source,
                record=record,
                field="atomic_numbers",
            )


def require_labels(
    store: GraphStore, labels: Sequence[str], *, role: str, keys: LabelKeys = DEFAULT_KEYS
) -> None:
    """Raise if any graph of ``store`` lacks one of ``labels`` (``energy``, ``forces``).

    Args:
        store: the graphs.
        labels: the labels every graph needs for its ``role``.
        role: e.g. ``"training"``, for the message.
        keys: the configured key names, for the message.
    """
    key_of = keys.as_dict()
    for label in labels:
        has = store.tensors[f"has_{label}"].numpy()
        if not has.all():
            g = int(np.flatnonzero(~has)[0])
            seen = store.meta.get("keys_seen")
            hint = f" The file's first frame carries {seen}." if seen else ""
            raise DataError(
                f"{int((~has).sum())} of {len(store)} configurations have no {label} under "
                f"the key '{key_of[label]}', which {role} data needs.{hint} Set "
                f"data.{label}_key to the file's name for it, or fix the file.",
                file=store.source,
                record=int(store.tensors["index"][g]),
                field=key_of[label],
            )


def check_consistent_labels(
    store: GraphStore, labels: Sequence[str] = ("energy", "forces"), keys: LabelKeys = DEFAULT_KEYS
) -> None:
    """Raise if a label is present in some graphs of a file and missing in others.

    A test set either has forces (force metrics) or not (energy metrics only); a file where
    a few frames lack them is damaged, and silently dropping those frames from the force
    metrics would hide it.
    """
    key_of = keys.as_dict()
    for label in labels:
        has = store.tensors[f"has_{label}"].numpy()
        if has.any() and not has.all():
            g = int(np.flatnonzero(~has)[0])
            raise DataError(
                f"this record has no {label} although {int(has.sum())} of the file's "
                f"{len(store)} records have; fix or remove it.",
                file=store.source,
                record=int(store.tensors["index"][g]),
                field=key_of[label],
            )


def check_not_empty(size: int, *, split: str, source: str, how: str = "") -> None:
    """Raise if a split has no configurations."""
    if size == 0:
        raise DataError(
            f"the {split} split is empty{f' ({how})' if how else ''}; it needs at least one "
            "configuration. Adjust data.valid_fraction / data.num_train / data.num_valid or "
            "the files.",
            file=source,
            field=split,
        )
