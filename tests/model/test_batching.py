"""A batch of different structures gives the results of each structure alone."""

from __future__ import annotations

import torch

from .helpers import batch, graph, read_molecule, relative_error, silicon_cell, small_model


def test_batch_equals_singles():
    model = small_model(seed=4, num_interactions=3, correlation=[3, 2, 1])
    structures = [
        read_molecule("3bpa", 0),
        read_molecule("ethanol", 4),
        silicon_cell(seed=1),
        read_molecule("acac", 2),
    ]
    together = model(batch(structures), compute_forces=True, compute_stress=True)
    start = 0
    for i, atoms in enumerate(structures):
        alone = model(graph(atoms), compute_forces=True, compute_stress=True)
        end = start + len(atoms)
        assert relative_error(together["energy"][i], alone["energy"][0]) < 1e-13
        assert relative_error(together["forces"][start:end], alone["forces"]) < 1e-12
        assert relative_error(together["node_energy"][start:end], alone["node_energy"]) < 1e-13
        assert (
            relative_error(together["interaction_energy"][i], alone["interaction_energy"][0])
            < 1e-12
        )
        if atoms.pbc.all():
            assert relative_error(together["stress"][i], alone["stress"][0]) < 1e-12
        else:
            assert torch.equal(together["stress"][i], torch.zeros(3, 3))
        start = end
    sums = [together["node_energy"][s].sum() for s in _slices(structures)]
    assert relative_error(together["energy"], torch.stack(sums)) < 1e-14


def _slices(structures):
    start = 0
    for atoms in structures:
        yield slice(start, start + len(atoms))
        start += len(atoms)
