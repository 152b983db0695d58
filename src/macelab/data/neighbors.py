"""Neighbour lists within a cutoff, periodic or not, computed by vesin.

Convention (the same as mace-torch, so that models and weights carry over exactly): an edge
``(sender, receiver)`` with integer cell shift ``S`` has the vector

    r = positions[receiver] - positions[sender] + S @ cell

and carries a message from ``sender`` to ``receiver``. Both directions of every pair are
listed, periodic images included; an atom is never its own neighbour with zero shift.
Edges come sorted by receiver, then sender, so the list is deterministic and each atom's
incoming edges are contiguous.
"""

from __future__ import annotations

import numpy as np
from vesin import NeighborList


def neighbour_list(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: tuple[bool, bool, bool] = (False, False, False),
) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs closer than ``cutoff``.

    Args:
        positions: ``[n_atoms, 3]`` Cartesian positions in Å.
        cutoff: the cutoff radius r_max in Å.
        cell: ``[3, 3]`` lattice vectors as rows (ignored along non-periodic directions).
        pbc: periodic boundary flags.

    Returns:
        ``edge_index`` ``[2, n_edges]`` (row 0 senders, row 1 receivers, int64) and
        ``unit_shifts`` ``[n_edges, 3]`` (integer multiples of the cell vectors, float64).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    periodic = [bool(flag) for flag in pbc]
    if not any(periodic):
        box = np.zeros((3, 3))
    calculator = NeighborList(cutoff=float(cutoff), full_list=True)
    sender, receiver, shifts = calculator.compute(positions, box, periodic, quantities="ijS")
    order = np.lexsort((sender, receiver))
    edge_index = np.stack([sender[order], receiver[order]]).astype(np.int64)
    unit_shifts = shifts[order].astype(np.float64)
    return edge_index, unit_shifts


def batched_molecule_neighbour_lists(
    positions: np.ndarray, cutoff: float, *, max_pairs_per_chunk: int = 4_000_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour lists of many non-periodic frames with the same atom count, vectorised.

    Equivalent to calling :func:`neighbour_list` on each frame (same ``d < cutoff`` rule, same
    receiver-then-sender order, zero shifts), but one numpy pass per chunk of frames instead
    of a call per frame: building the graphs of a 100,000-frame rMD17 molecule is then a
    matter of seconds.

    Args:
        positions: ``[n_frames, n_atoms, 3]`` Cartesian positions in Å.
        cutoff: the cutoff radius r_max in Å.
        max_pairs_per_chunk: bounds the temporary ``[chunk, n_atoms, n_atoms]`` arrays.

    Returns:
        ``frame`` ``[n_edges]``, ``sender`` ``[n_edges]`` and ``receiver`` ``[n_edges]``
        (int64, atom indices local to each frame), sorted by frame, receiver, sender.
    """
    positions = np.asarray(positions, dtype=np.float64)
    n_frames, n_atoms, _ = positions.shape
    cutoff_sq = float(cutoff) ** 2
    chunk = max(1, max_pairs_per_chunk // max(n_atoms * n_atoms, 1))
    off_diagonal = ~np.eye(n_atoms, dtype=bool)
    frames, senders, receivers = [], [], []
    for first in range(0, n_frames, chunk):
        block = positions[first : first + chunk]  # [c, n, 3]
        diff = block[:, None, :, :] - block[:, :, None, :]  # [c, receiver, sender, 3]
        dist_sq = np.einsum("crsk,crsk->crs", diff, diff)  # [c, n, n]
        mask = (dist_sq < cutoff_sq) & off_diagonal
        frame, receiver, sender = np.nonzero(mask)  # C order: frame, receiver, sender
        frames.append(frame + first)
        senders.append(sender)
        receivers.append(receiver)
    if not frames:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return (
        np.concatenate(frames).astype(np.int64),
        np.concatenate(senders).astype(np.int64),
        np.concatenate(receivers).astype(np.int64),
    )
