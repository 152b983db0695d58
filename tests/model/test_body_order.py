"""Body order: one interaction of correlation nu gives (nu+1)-body energies (Eq. 10-13).

The many-body expansion of the energy of a cluster X is E(X) = sum_{T subset X} V(T) with
V(T) = sum_{S subset T} (-1)^{|T|-|S|} E(S) (Moebius inversion). With one layer, a linear
readout (as in MACE) and correlation nu, each atomic energy is a polynomial of degree nu in
sums over neighbours, so V(T) = 0 for |T| > nu + 1, while V(T) for |T| = nu + 1 is not.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms

from .helpers import batch, small_model


def _cluster(size: int, seed: int) -> Atoms:
    """``size`` atoms of H, C, N, O, all within 3.5 Å of each other (r_max = 5 Å)."""
    rng = np.random.default_rng(seed)
    positions: list[np.ndarray] = []
    while len(positions) < size:
        candidate = rng.uniform(-1.5, 1.5, 3)
        if all(np.linalg.norm(candidate - p) > 0.9 for p in positions):
            positions.append(candidate)
    numbers = [[1, 6, 7, 8][i % 4] for i in range(size)]
    return Atoms(numbers=numbers, positions=np.array(positions))


def _expansion_terms(model, cluster: Atoms) -> dict[tuple[int, ...], float]:
    """V(T) for every non-empty subset T of the cluster (one batched forward pass)."""
    subsets = [
        s
        for k in range(1, len(cluster) + 1)
        for s in itertools.combinations(range(len(cluster)), k)
    ]
    out = model(batch([cluster[list(s)] for s in subsets]), compute_forces=False)
    energy = dict(zip(subsets, out["interaction_energy"].detach().tolist(), strict=True))
    terms = {}
    for subset in subsets:
        terms[subset] = sum(
            (-1) ** (len(subset) - k) * energy[s]
            for k in range(1, len(subset) + 1)
            for s in itertools.combinations(subset, k)
        )
    return terms


@pytest.mark.parametrize(
    ("nu", "first"), [(1, "residual"), (2, "residual"), (2, "plain"), (3, "residual")]
)
def test_one_layer_has_body_order_nu_plus_one(nu, first):
    model = small_model(
        seed=nu, num_interactions=1, correlation=nu, max_ell=2, interaction_first=first
    )
    terms = _expansion_terms(model, _cluster(nu + 2, seed=nu))
    scale = max(abs(v) for v in terms.values())
    top = [v for t, v in terms.items() if len(t) == nu + 2]
    below = [v for t, v in terms.items() if len(t) == nu + 1]
    assert max(abs(v) for v in top) < 1e-12 * scale
    assert max(abs(v) for v in below) > 1e-6 * scale


def test_two_layers_exceed_nu_plus_one():
    """The check can fail: stacking layers raises the body order (nu = 1, two layers)."""
    with torch.random.fork_rng():
        model = small_model(seed=9, num_interactions=2, correlation=1, max_ell=2)
    terms = _expansion_terms(model, _cluster(3, seed=4))
    scale = max(abs(v) for v in terms.values())
    assert abs(terms[(0, 1, 2)]) > 1e-6 * scale
