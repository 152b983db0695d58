"""A data set of atomic graphs stored as a few concatenated tensors.

One :class:`GraphStore` holds all graphs of one source (an xyz file, or frames of an rMD17
molecule) as concatenated per-atom, per-edge and per-graph tensors plus offsets, the layout
torch-geometric's ``InMemoryDataset`` uses. That makes three things cheap:

* building: neighbour lists of all same-size molecules in one vectorised pass
  (:func:`~macelab.data.neighbors.batched_molecule_neighbour_lists`), periodic frames by vesin;
* caching: ``torch.save`` of a dozen tensors, not of a hundred thousand objects;
* splitting: :meth:`GraphStore.select` gathers a subset with index arithmetic.

Building also keeps each graph's shortest edge (``closest_distance``, from the lengths the
neighbour search computes anyway), so that atoms that are too close to each other are found
without another pass (:func:`macelab.data.checks.check_min_distance`).

Items are :class:`~macelab.data.graph.AtomicGraph` objects with the fields and dtypes listed
in ``graph.py``; ``torch_geometric.loader.DataLoader`` batches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from macelab.data.configuration import Configuration
from macelab.data.graph import AtomicGraph
from macelab.data.neighbors import batched_molecule_neighbour_lists, neighbour_list

NODE_KEYS = ("atomic_numbers", "positions", "forces")
EDGE_KEYS = ("edge_index", "unit_shifts")  # edge_index is [2, E], the others [E, ...]
GRAPH_KEYS = (
    "cell",
    "pbc",
    "energy",
    "stress",
    "has_energy",
    "has_forces",
    "has_stress",
    "weight",
    "index",
    "closest_distance",  # [G] float64, Å: the shortest edge of each graph (inf if none)
)


@dataclass
class FrameArrays:
    """Frames as concatenated numpy arrays (``N`` atoms in all, ``G`` frames).

    Missing labels are zeros with a False ``has_*`` flag, as in the graphs.
    """

    atomic_numbers: np.ndarray  # [N] int64
    positions: np.ndarray  # [N, 3] float64, Å
    node_ptr: np.ndarray  # [G + 1] int64, frame g owns atoms node_ptr[g]:node_ptr[g + 1]
    cell: np.ndarray  # [G, 3, 3] float64, zeros for non-periodic frames
    pbc: np.ndarray  # [G, 3] bool
    energy: np.ndarray  # [G] float64, eV
    has_energy: np.ndarray  # [G] bool
    forces: np.ndarray  # [N, 3] float64, eV/Å
    has_forces: np.ndarray  # [G] bool
    stress: np.ndarray  # [G, 3, 3] float64, eV/Å^3
    has_stress: np.ndarray  # [G] bool
    weight: np.ndarray  # [G] float64
    index: np.ndarray  # [G] int64, record index in the source

    @classmethod
    def from_configurations(cls, configs: Sequence[Configuration]) -> FrameArrays:
        counts = np.array([c.num_atoms for c in configs], dtype=np.int64)
        zeros3 = np.zeros((3, 3))
        return cls(
            atomic_numbers=np.concatenate([c.atomic_numbers for c in configs]).astype(np.int64),
            positions=np.concatenate([c.positions for c in configs]).astype(np.float64),
            node_ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            cell=np.stack([np.asarray(c.cell) if any(c.pbc) else zeros3 for c in configs]).astype(
                np.float64
            ),
            pbc=np.array([c.pbc for c in configs], dtype=bool).reshape(-1, 3),
            energy=np.array([0.0 if c.energy is None else c.energy for c in configs]),
            has_energy=np.array([c.energy is not None for c in configs], dtype=bool),
            forces=np.concatenate(
                [np.zeros((c.num_atoms, 3)) if c.forces is None else c.forces for c in configs]
            ).astype(np.float64),
            has_forces=np.array([c.forces is not None for c in configs], dtype=bool),
            stress=np.stack([zeros3 if c.stress is None else c.stress for c in configs]).astype(
                np.float64
            ),
            has_stress=np.array([c.stress is not None for c in configs], dtype=bool),
            weight=np.array([c.weight for c in configs], dtype=np.float64),
            index=np.array([c.index for c in configs], dtype=np.int64),
        )


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each start and count, without a loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    begin = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.repeat(starts - begin, counts) + np.arange(total, dtype=np.int64)


def _edges(
    frames: FrameArrays, r_max: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All edges of all frames: frame id [E], edge_index [2, E] (local), unit_shifts [E, 3]
    and lengths [E] (Å)."""
    counts = np.diff(frames.node_ptr)
    periodic = frames.pbc.any(axis=1)
    frame_ids, senders, receivers, shifts, lengths = [], [], [], [], []
    for n_atoms in np.unique(counts[~periodic]):
        group = np.flatnonzero(~periodic & (counts == n_atoms))
        atoms = frames.node_ptr[group][:, None] + np.arange(n_atoms)  # [g, n]
        frame, sender, receiver, length = batched_molecule_neighbour_lists(
            frames.positions[atoms], r_max, distances=True
        )
        frame_ids.append(group[frame])
        senders.append(sender)
        receivers.append(receiver)
        shifts.append(np.zeros((frame.shape[0], 3), dtype=np.int32))
        lengths.append(length)
    for g in np.flatnonzero(periodic):
        begin, end = frames.node_ptr[g], frames.node_ptr[g + 1]
        edge_index, unit_shifts, length = neighbour_list(
            frames.positions[begin:end],
            r_max,
            frames.cell[g],
            tuple(frames.pbc[g]),
            distances=True,
        )
        frame_ids.append(np.full(edge_index.shape[1], g, dtype=np.int64))
        senders.append(edge_index[0])
        receivers.append(edge_index[1])
        shifts.append(unit_shifts.astype(np.int32))
        lengths.append(length)
    if not frame_ids:
        empty = np.zeros(0, np.int64)
        return empty, np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int32), np.zeros(0)
    frame_id = np.concatenate(frame_ids)
    order = np.argsort(frame_id, kind="stable")  # keeps receiver-then-sender order per frame
    edge_index = np.stack([np.concatenate(senders), np.concatenate(receivers)])[:, order]
    return (
        frame_id[order],
        edge_index,
        np.concatenate(shifts)[order],
        np.concatenate(lengths)[order],
    )


def _shortest_per_graph(edge_ptr: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``[G]`` the shortest edge of each graph (edges grouped by graph), inf where none."""
    counts = np.diff(edge_ptr)
    shortest = np.full(counts.shape[0], np.inf)
    has_edges = counts > 0
    if has_edges.any():
        shortest[has_edges] = np.minimum.reduceat(lengths, edge_ptr[:-1][has_edges])
    return shortest


class GraphStore(Dataset):
    """Graphs of one source as concatenated tensors; ``store[i]`` is an ``AtomicGraph``.

    Attributes:
        tensors: the concatenated tensors (keys of ``NODE_KEYS``, ``EDGE_KEYS``,
            ``GRAPH_KEYS``, plus ``node_ptr`` and ``edge_ptr``); ``unit_shifts`` is absent when
            no graph is periodic (it is then all zeros).
        source: the file the graphs came from (for messages).
        r_max: the cutoff the edges were built with, Å.
        config_types: each graph's ``config_type`` (or ``None``).
        meta: small JSON-like facts about the source (e.g. the label keys it carries).
    """

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        *,
        source: str,
        r_max: float,
        config_types: list[str | None],
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.tensors = tensors
        self.source = source
        self.r_max = float(r_max)
        self.config_types = list(config_types)
        self.meta = dict(meta or {})
        self._node_ptr: list[int] = tensors["node_ptr"].tolist()
        self._edge_ptr: list[int] = tensors["edge_ptr"].tolist()

    # -- building -------------------------------------------------------------------------
    @classmethod
    def from_frames(
        cls,
        frames: FrameArrays,
        r_max: float,
        *,
        source: str,
        config_types: list[str | None] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> GraphStore:
        """Build the neighbour lists of ``frames`` within ``r_max`` and store everything."""
        n_graphs = frames.node_ptr.shape[0] - 1
        frame_id, edge_index, unit_shifts, lengths = _edges(frames, r_max)
        edge_ptr = np.concatenate([[0], np.cumsum(np.bincount(frame_id, minlength=n_graphs))])
        max_atoms = int(np.diff(frames.node_ptr).max(initial=0))
        index_dtype = torch.int16 if max_atoms < 2**15 else torch.int32
        f64 = torch.float64
        tensors = {
            "node_ptr": torch.as_tensor(frames.node_ptr, dtype=torch.int64),
            "edge_ptr": torch.as_tensor(edge_ptr, dtype=torch.int64),
            "atomic_numbers": torch.as_tensor(frames.atomic_numbers, dtype=torch.int64),
            "positions": torch.as_tensor(frames.positions, dtype=f64),
            "forces": torch.as_tensor(frames.forces, dtype=f64),
            "edge_index": torch.as_tensor(edge_index).to(index_dtype),
            "cell": torch.as_tensor(frames.cell, dtype=f64),
            "pbc": torch.as_tensor(frames.pbc, dtype=torch.bool),
            "energy": torch.as_tensor(frames.energy, dtype=f64),
            "stress": torch.as_tensor(frames.stress, dtype=f64),
            "has_energy": torch.as_tensor(frames.has_energy, dtype=torch.bool),
            "has_forces": torch.as_tensor(frames.has_forces, dtype=torch.bool),
            "has_stress": torch.as_tensor(frames.has_stress, dtype=torch.bool),
            "weight": torch.as_tensor(frames.weight, dtype=f64),
            "index": torch.as_tensor(frames.index, dtype=torch.int64),
            "closest_distance": torch.as_tensor(_shortest_per_graph(edge_ptr, lengths), dtype=f64),
        }
        if frames.pbc.any():
            tensors["unit_shifts"] = torch.as_tensor(unit_shifts, dtype=torch.int32)
        types = config_types if config_types is not None else [None] * n_graphs
        return cls(tensors, source=source, r_max=r_max, config_types=types, meta=meta)

    @classmethod
    def from_configurations(
        cls,
        configs: Sequence[Configuration],
        r_max: float,
        *,
        source: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> GraphStore:
        """Build the graphs of ``configs`` (validated configurations, at least one)."""
        frames = FrameArrays.from_configurations(configs)
        return cls.from_frames(
            frames,
            r_max,
            source=source if source is not None else configs[0].source,
            config_types=[c.config_type for c in configs],
            meta=meta,
        )

    # -- saving ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the store (tensors and plain Python values only)."""
        return {
            "tensors": self.tensors,
            "source": self.source,
            "r_max": self.r_max,
            "config_types": self.config_types,
            "meta": self.meta,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GraphStore:
        return cls(
            state["tensors"],
            source=state["source"],
            r_max=state["r_max"],
            config_types=state["config_types"],
            meta=state["meta"],
        )

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._node_ptr) - 1

    @property
    def num_atoms(self) -> torch.Tensor:
        """``[n_graphs]`` atom count of each graph."""
        return torch.diff(self.tensors["node_ptr"])

    @property
    def num_edges(self) -> torch.Tensor:
        """``[n_graphs]`` edge count of each graph."""
        return torch.diff(self.tensors["edge_ptr"])

    @property
    def graph_of_atom(self) -> torch.Tensor:
        """``[n_atoms_total]`` the graph each atom belongs to."""
        return torch.repeat_interleave(torch.arange(len(self)), self.num_atoms)

    def elements(self) -> list[int]:
        """Sorted atomic numbers present."""
        return sorted(int(z) for z in torch.unique(self.tensors["atomic_numbers"]))

    def edge_lengths(self, graphs: Sequence[int] | None = None) -> np.ndarray:
        """Lengths of the edges of ``graphs`` (default: all), concatenated in order, Å."""
        t = self.tensors
        node_ptr = t["node_ptr"].numpy()
        edge_ptr = t["edge_ptr"].numpy()
        chosen = np.arange(len(self)) if graphs is None else np.asarray(graphs, dtype=np.int64)
        counts = edge_ptr[chosen + 1] - edge_ptr[chosen]
        edges = _ranges(edge_ptr[chosen], counts)
        graph = np.repeat(chosen, counts)
        local = t["edge_index"][:, edges].numpy().astype(np.int64)
        positions = t["positions"].numpy()
        sender, receiver = local + node_ptr[graph]
        vectors = positions[receiver] - positions[sender]
        if "unit_shifts" in t:
            shifts = t["unit_shifts"][edges].numpy().astype(np.float64)
            vectors += np.einsum("ei,eij->ej", shifts, t["cell"].numpy()[graph])
        return np.linalg.norm(vectors, axis=-1)

    def closest_distances(self) -> np.ndarray:
        """``[n_graphs]`` the shortest edge of each graph, Å (inf for a graph without edges).

        Kept from the neighbour search when the store was built; computed from the edges for
        a store saved without it.
        """
        stored = self.tensors.get("closest_distance")
        if stored is not None:
            return stored.numpy()
        return _shortest_per_graph(self.tensors["edge_ptr"].numpy(), self.edge_lengths())

    def __getitem__(self, i: int) -> AtomicGraph:
        if i < 0:
            i += len(self)
        t = self.tensors
        n0, n1 = self._node_ptr[i], self._node_ptr[i + 1]
        e0, e1 = self._edge_ptr[i], self._edge_ptr[i + 1]
        shifts = t.get("unit_shifts")
        return AtomicGraph(
            num_nodes=n1 - n0,
            positions=t["positions"][n0:n1].clone(),
            atomic_numbers=t["atomic_numbers"][n0:n1],
            edge_index=t["edge_index"][:, e0:e1].to(torch.int64),
            unit_shifts=(
                torch.zeros(e1 - e0, 3, dtype=torch.float64)
                if shifts is None
                else shifts[e0:e1].to(torch.float64)
            ),
            cell=t["cell"][i : i + 1],
            pbc=t["pbc"][i : i + 1],
            energy=t["energy"][i : i + 1],
            forces=t["forces"][n0:n1],
            stress=t["stress"][i : i + 1],
            has_energy=t["has_energy"][i : i + 1],
            has_forces=t["has_forces"][i : i + 1],
            has_stress=t["has_stress"][i : i + 1],
            weight=t["weight"][i : i + 1],
            index=t["index"][i : i + 1],
        )

    def select(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> GraphStore:
        """A new store holding graphs ``indices`` (positions in this store), in that order."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"indices out of range for a store of {len(self)} graphs")
        node_ptr, edge_ptr = self.tensors["node_ptr"], self.tensors["edge_ptr"]
        node_counts = (node_ptr[idx + 1] - node_ptr[idx]).numpy()
        edge_counts = (edge_ptr[idx + 1] - edge_ptr[idx]).numpy()
        nodes = torch.as_tensor(_ranges(node_ptr[idx].numpy(), node_counts))
        edges = torch.as_tensor(_ranges(edge_ptr[idx].numpy(), edge_counts))
        tensors: dict[str, torch.Tensor] = {}
        for key, value in self.tensors.items():
            if key in NODE_KEYS:
                tensors[key] = value[nodes]
            elif key == "edge_index":
                tensors[key] = value[:, edges]
            elif key in EDGE_KEYS:
                tensors[key] = value[edges]
            elif key in GRAPH_KEYS:
                tensors[key] = value[idx]
        zero = torch.zeros(1, dtype=torch.int64)
        tensors["node_ptr"] = torch.cat([zero, torch.cumsum(torch.as_tensor(node_counts), 0)])
        tensors["edge_ptr"] = torch.cat([zero, torch.cumsum(torch.as_tensor(edge_counts), 0)])
        return GraphStore(
            tensors,
            source=self.source,
            r_max=self.r_max,
            config_types=[self.config_types[i] for i in idx.tolist()],
            meta=self.meta,
        )
