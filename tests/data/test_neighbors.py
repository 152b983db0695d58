"""Neighbour lists against a brute-force O(n^2) search over periodic images."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from macelab.data.neighbors import batched_molecule_neighbour_lists, neighbour_list


def brute_force(positions, cutoff, cell=None, pbc=(False, False, False)):
    """Every (sender, receiver, shift) with |r_i - r_j + S @ cell| < cutoff, by enumeration."""
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell)
    reach = []
    for axis in range(3):
        if pbc[axis]:
            # enough images along this axis: cutoff / (height of the cell along the axis)
            normal = np.cross(cell[(axis + 1) % 3], cell[(axis + 2) % 3])
            height = abs(np.dot(cell[axis], normal)) / np.linalg.norm(normal)
            reach.append(int(np.ceil(cutoff / height)) + 1)
        else:
            reach.append(0)
    edges = set()
    for shift in itertools.product(*(range(-r, r + 1) for r in reach)):
        offset = np.asarray(shift) @ cell
        for i, j in itertools.product(range(len(positions)), repeat=2):
            if i == j and not any(shift):
                continue
            if np.linalg.norm(positions[i] - positions[j] + offset) < cutoff:
                edges.add((j, i, shift))  # sender j, receiver i
    return edges


def as_set(edge_index, unit_shifts):
    return {
        (int(s), int(r), tuple(int(x) for x in shift))
        for s, r, shift in zip(edge_index[0], edge_index[1], unit_shifts, strict=True)
    }


def test_molecule_matches_brute_force():
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 6, size=(20, 3))
    edge_index, unit_shifts = neighbour_list(positions, 3.0)
    assert as_set(edge_index, unit_shifts) == brute_force(positions, 3.0)
    # sorted by receiver, then sender; both directions present
    order = np.lexsort((edge_index[0], edge_index[1]))
    np.testing.assert_array_equal(order, np.arange(edge_index.shape[1]))


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, True, False)])
def test_periodic_cell_matches_brute_force(pbc):
    rng = np.random.default_rng(1)
    cell = np.array([[3.2, 0.0, 0.0], [0.7, 2.9, 0.0], [0.3, -0.4, 3.5]])  # triclinic, small
    positions = rng.uniform(0, 1, size=(5, 3)) @ cell
    edge_index, unit_shifts = neighbour_list(positions, 3.3, cell, pbc)
    expected = brute_force(positions, 3.3, cell, pbc)
    assert as_set(edge_index, unit_shifts) == expected
    assert any(any(shift) for _, _, shift in expected)  # the test does exercise images
    vectors = positions[edge_index[1]] - positions[edge_index[0]] + unit_shifts @ cell
    assert np.all(np.linalg.norm(vectors, axis=1) < 3.3)


def test_lattice_without_pbc_is_ignored():
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 9.5]])
    cell = np.eye(3) * 10.0
    edge_index, unit_shifts = neighbour_list(positions, 1.5, cell, (False, False, False))
    assert as_set(edge_index, unit_shifts) == {(0, 1, (0, 0, 0)), (1, 0, (0, 0, 0))}


def test_batched_molecules_equal_per_frame_lists():
    rng = np.random.default_rng(2)
    frames = rng.uniform(0, 5, size=(37, 9, 3))
    frame, sender, receiver = batched_molecule_neighbour_lists(frames, 2.5, max_pairs_per_chunk=500)
    for f in range(len(frames)):
        edge_index, _ = neighbour_list(frames[f], 2.5)
        mask = frame == f
        np.testing.assert_array_equal(sender[mask], edge_index[0])
        np.testing.assert_array_equal(receiver[mask], edge_index[1])
    assert np.all(np.diff(frame) >= 0)
