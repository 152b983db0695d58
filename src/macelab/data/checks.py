"""Checks across configurations that no single record can make on its own.

Each raises :class:`~macelab.errors.DataError` naming the file, the record and the field,
with what to do: an element the model's element table does not know, a label that a split
needs but a record lacks, a label present in some records of a file and absent in others,
an empty split, atoms closer than ``data.min_distance``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from macelab.data.configuration import Configuration
from macelab.data.neighbors import closest_pair, too_close_error
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


def check_min_distance(
    store: GraphStore, min_distance: float | None, *, option: str = "data.min_distance"
) -> None:
    """Raise if any graph of ``store`` has two atoms closer than ``min_distance`` Å.

    Uses the shortest edge each graph kept from its neighbour search, so it costs one
    comparison per graph; the offending pair is looked up only when there is one. ``None``
    or ``0`` turns the check off.
    """
    if not min_distance or min_distance <= 0:
        return
    bad = np.flatnonzero(store.closest_distances() < float(min_distance))
    if bad.size == 0:
        return
    g = int(bad[0])
    edge_ptr = store.tensors["edge_ptr"]
    edges = store.tensors["edge_index"][:, int(edge_ptr[g]) : int(edge_ptr[g + 1])].numpy()
    node_ptr = store.tensors["node_ptr"]
    z = store.tensors["atomic_numbers"][int(node_ptr[g]) : int(node_ptr[g + 1])].numpy()
    raise too_close_error(
        closest_pair(edges, store.edge_lengths([g])),
        float(min_distance),
        option=option,
        atomic_numbers=z,
        file=store.source,
        record=int(store.tensors["index"][g]),
        others=int(bad.size - 1),
    )


def find_bad_graph(batch: Any, min_distance: float) -> tuple[int, str, str] | None:
    """The first graph of a batch whose inputs or labels cannot give a finite loss.

    Looks for NaN or inf in positions, cell, weights and the labels a graph carries, and
    for two atoms closer than ``min_distance`` Å (coincident atoms always count). Meant for
    after a non-finite loss, to tell a data problem from an optimisation one.

    Returns:
        ``(graph, field, what)``: the graph's position in the batch, the field concerned and
        a description, or None if the batch looks sound.
    """
    graph_of_atom = batch.batch.detach().cpu()
    num_graphs = int(batch.num_graphs)
    per_atom = {"positions": batch.positions, "forces": batch.forces}
    per_graph = {"energy": batch.energy, "cell": batch.cell, "weight": batch.weight}
    if hasattr(batch, "stress"):
        per_graph["stress"] = batch.stress
    for field, values in {**per_atom, **per_graph}.items():
        values = values.detach().cpu().reshape(values.shape[0], -1)
        if field in ("energy", "forces", "stress"):
            has = getattr(batch, f"has_{field}").detach().cpu().reshape(-1)
        else:
            has = torch.ones(num_graphs, dtype=torch.bool)
        bad_rows = ~torch.isfinite(values).all(dim=1)
        owners = graph_of_atom if field in per_atom else torch.arange(num_graphs)
        bad = torch.unique(owners[bad_rows])
        bad = bad[has[bad]]
        if bad.numel():
            return int(bad[0]), field, f"its {field} has NaN or inf values"
    sender, receiver = batch.edge_index.detach().cpu()
    if sender.numel() == 0:
        return None
    positions = batch.positions.detach().cpu().to(torch.float64)
    graph_of_edge = graph_of_atom[sender]
    cell = batch.cell.detach().cpu().to(torch.float64).reshape(-1, 3, 3)[graph_of_edge]
    shifts = torch.einsum("ei,eij->ej", batch.unit_shifts.detach().cpu().to(torch.float64), cell)
    lengths = torch.linalg.norm(positions[receiver] - positions[sender] + shifts, dim=-1)
    close = torch.nonzero((lengths < min_distance) | (lengths == 0)).flatten()
    if close.numel() == 0:
        return None
    k = int(close[torch.argmin(lengths[close])])
    g = int(graph_of_edge[k])
    start = int(batch.ptr[g])
    i, j = sorted((int(sender[k]) - start, int(receiver[k]) - start))
    distance = float(lengths[k])
    where = "at the same position" if distance == 0 else f"{distance:.3g} Å apart"
    return g, "positions", f"its atoms {i} and {j} are {where}"
