"""Neighbour lists within a cutoff, periodic or not, computed by vesin.

Convention (the same as mace-torch, so that models and weights carry over exactly): an edge
``(sender, receiver)`` with integer cell shift ``S`` has the vector

    r = positions[receiver] - positions[sender] + S @ cell

and carries a message from ``sender`` to ``receiver``. Both directions of every pair are
listed, periodic images included; an atom is never its own neighbour with zero shift.
Edges come sorted by receiver, then sender, so the list is deterministic and each atom's
incoming edges are contiguous.

Both searches can also return each edge's length, which they compute anyway: the data layer
uses it to refuse atoms closer than ``min_distance`` (:data:`DEFAULT_MIN_DISTANCE`) at no
extra cost. Coincident atoms give edges of length zero, whose direction (the model's
spherical harmonics) is undefined: the energy and forces come out NaN.
"""

from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols
from vesin import NeighborList

from macelab.errors import AtomsTooCloseError

# Å. No molecule or crystal has nuclei this close: the shortest bond (H2) is 0.74 Å, and
# dimer curves in training sets rarely go below 0.5 Å. Closer atoms are a broken frame (two
# atoms written at the same place, a wrong unit, an exploded MD step), not chemistry.
DEFAULT_MIN_DISTANCE = 0.3


def neighbour_list(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: tuple[bool, bool, bool] = (False, False, False),
    *,
    distances: bool = False,
) -> tuple[np.ndarray, ...]:
    """All ordered pairs closer than ``cutoff``.

    Args:
        positions: ``[n_atoms, 3]`` Cartesian positions in Å.
        cutoff: the cutoff radius r_max in Å.
        cell: ``[3, 3]`` lattice vectors as rows (ignored along non-periodic directions).
        pbc: periodic boundary flags.
        distances: also return the length of each edge.

    Returns:
        ``edge_index`` ``[2, n_edges]`` (row 0 senders, row 1 receivers, int64) and
        ``unit_shifts`` ``[n_edges, 3]`` (integer multiples of the cell vectors, float64);
        with ``distances``, the edge lengths ``[n_edges]`` (float64, Å) as well.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    periodic = [bool(flag) for flag in pbc]
    if not any(periodic):
        box = np.zeros((3, 3))
    calculator = NeighborList(cutoff=float(cutoff), full_list=True)
    sender, receiver, shifts, lengths = calculator.compute(
        positions, box, periodic, quantities="ijSd"
    )
    order = np.lexsort((sender, receiver))
    edge_index = np.stack([sender[order], receiver[order]]).astype(np.int64)
    unit_shifts = shifts[order].astype(np.float64)
    if distances:
        return edge_index, unit_shifts, np.asarray(lengths, dtype=np.float64)[order]
    return edge_index, unit_shifts


def batched_molecule_neighbour_lists(
    positions: np.ndarray,
    cutoff: float,
    *,
    max_pairs_per_chunk: int = 4_000_000,
    distances: bool = False,
) -> tuple[np.ndarray, ...]:
    """Neighbour lists of many non-periodic frames with the same atom count, vectorised.

    Equivalent to calling :func:`neighbour_list` on each frame (same ``d < cutoff`` rule, same
    receiver-then-sender order, zero shifts), but one numpy pass per chunk of frames instead
    of a call per frame: building the graphs of a 100,000-frame rMD17 molecule is then a
    matter of seconds.

    Args:
        positions: ``[n_frames, n_atoms, 3]`` Cartesian positions in Å.
        cutoff: the cutoff radius r_max in Å.
        max_pairs_per_chunk: bounds the temporary ``[chunk, n_atoms, n_atoms]`` arrays.
        distances: also return the length of each edge.

    Returns:
        ``frame`` ``[n_edges]``, ``sender`` ``[n_edges]`` and ``receiver`` ``[n_edges]``
        (int64, atom indices local to each frame), sorted by frame, receiver, sender; with
        ``distances``, the edge lengths ``[n_edges]`` (float64, Å) as well.
    """
    positions = np.asarray(positions, dtype=np.float64)
    n_frames, n_atoms, _ = positions.shape
    cutoff_sq = float(cutoff) ** 2
    chunk = max(1, max_pairs_per_chunk // max(n_atoms * n_atoms, 1))
    off_diagonal = ~np.eye(n_atoms, dtype=bool)
    frames, senders, receivers, lengths_sq = [], [], [], []
    for first in range(0, n_frames, chunk):
        block = positions[first : first + chunk]  # [c, n, 3]
        diff = block[:, None, :, :] - block[:, :, None, :]  # [c, receiver, sender, 3]
        dist_sq = np.einsum("crsk,crsk->crs", diff, diff)  # [c, n, n]
        mask = (dist_sq < cutoff_sq) & off_diagonal
        frame, receiver, sender = np.nonzero(mask)  # C order: frame, receiver, sender
        frames.append(frame + first)
        senders.append(sender)
        receivers.append(receiver)
        if distances:
            lengths_sq.append(dist_sq[frame, receiver, sender])
    if not frames:
        empty = np.zeros(0, dtype=np.int64)
        return (empty, empty, empty, np.zeros(0)) if distances else (empty, empty, empty)
    edges = (
        np.concatenate(frames).astype(np.int64),
        np.concatenate(senders).astype(np.int64),
        np.concatenate(receivers).astype(np.int64),
    )
    if distances:
        return (*edges, np.sqrt(np.concatenate(lengths_sq)))
    return edges


def closest_pair(edge_index: np.ndarray, lengths: np.ndarray) -> tuple[int, int, float] | None:
    """The two atoms of the shortest edge, ``(i, j, distance)`` with ``i <= j``, or None.

    Args:
        edge_index: ``[2, n_edges]`` (sender, receiver) of one structure.
        lengths: ``[n_edges]`` edge lengths, Å.
    """
    if lengths.size == 0:
        return None
    k = int(np.argmin(lengths))
    i, j = sorted((int(edge_index[0, k]), int(edge_index[1, k])))
    return i, j, float(lengths[k])


def too_close_error(
    pair: tuple[int, int, float],
    min_distance: float,
    *,
    option: str,
    atomic_numbers: np.ndarray | None = None,
    file: str | None = None,
    record: int | str | None = None,
    others: int = 0,
    advice: str = "Fix or remove this structure",
) -> AtomsTooCloseError:
    """The error for two atoms closer than ``min_distance``, naming them and the option.

    Args:
        pair: ``(i, j, distance)`` from :func:`closest_pair`.
        min_distance: the threshold, Å.
        option: how the user sets the threshold (e.g. ``data.min_distance``).
        atomic_numbers: the structure's atomic numbers, to name the elements.
        file: the file the structure comes from.
        record: its record (frame index) in that file.
        others: how many more structures of the same file have such atoms.
        advice: what to do, before the alternative of lowering ``option``.
    """
    i, j, distance = pair
    names = ""
    if atomic_numbers is not None:
        names = f" ({chemical_symbols[int(atomic_numbers[i])]} and "
        names += f"{chemical_symbols[int(atomic_numbers[j])]})"
    if distance == 0.0:
        what = f"atoms {i} and {j}{names} are at the same position"
    else:
        what = f"atoms {i} and {j}{names} are {distance:.3g} Å apart"
    more = f" ({others} more record(s) of this file have atoms that close)" if others else ""
    return AtomsTooCloseError(
        f"{what}, closer than {option}={min_distance:g} Å{more}. No structure has nuclei "
        "that close (the H2 bond is 0.74 Å); the model's energy and forces there are "
        f"meaningless (NaN for coincident atoms). {advice}, or lower {option} (0 turns "
        "the check off).",
        pair=pair,
        min_distance=min_distance,
        file=file,
        record=record,
    )
