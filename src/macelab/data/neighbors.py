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
