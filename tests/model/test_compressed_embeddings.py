"""Compressed species embeddings (embedding=low_rank): equivariance intact, full rank with
identity factors equals the plain model, and parameter counts for 4 and 89 elements."""

from __future__ import annotations

import pytest
import torch

from macelab.model import MACE
from macelab.model.build import count_parameters
from tests.model.helpers import (
    ELEMENTS,
    batch,
    random_orthogonal,
    relative_error,
    silicon_cell,
    small_model,
)


def _low_rank_copy_of(plain: MACE) -> MACE:
    """The plain model re-expressed at full rank: identity factors, the same tables."""
    rank = len(ELEMENTS)
    low = small_model(embedding="low_rank", embedding_rank=rank)
    state = plain.state_dict()
    with torch.no_grad():
        missing = low.load_state_dict(state, strict=False).missing_keys
        assert all(key.endswith("factors") for key in missing), missing
        for name, parameter in low.named_parameters():
            if name.endswith("factors"):
                parameter.copy_(torch.eye(rank, dtype=parameter.dtype))
    return low


def test_full_rank_with_identity_factors_is_the_plain_model():
    plain = small_model()
    low = _low_rank_copy_of(plain)
    inputs = batch([silicon_cell(0)])
    expected = plain(inputs, compute_forces=True)
    got = low(inputs, compute_forces=True)
    torch.testing.assert_close(got["energy"], expected["energy"], rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(got["forces"], expected["forces"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 2])
def test_low_rank_is_equivariant(rank):
    model = small_model(embedding="low_rank", embedding_rank=rank)
    atoms = silicon_cell(2)
    base = model(batch([atoms]), compute_forces=True)
    q = random_orthogonal(rank, reflect=True)
    moved = atoms.copy()
    moved.positions = atoms.positions @ q.T
    moved.cell = atoms.cell.array @ q.T
    out = model(batch([moved]), compute_forces=True)
    assert relative_error(out["energy"], base["energy"]) < 1e-12
    rotated = base["forces"] @ torch.as_tensor(q.T)
    assert relative_error(out["forces"], rotated) < 1e-10


def _count(num_elements: int, **options) -> int:
    model = MACE(
        atomic_numbers=list(range(1, num_elements + 1)),
        atomic_energies=[0.0] * num_elements,
        avg_num_neighbors=10.0,
        channels=32,
        max_L=1,
        correlation=3,
        **options,
    )
    return count_parameters(model)


def test_parameter_counts_shrink_with_rank_for_many_elements():
    """89 elements (a foundation-size table): rank 4 tables are a fraction of full ones."""
    counts = {
        (n, rank): _count(
            n, **({} if rank is None else dict(embedding="low_rank", embedding_rank=rank))
        )
        for n in (4, 89)
        for rank in (None, 1, 2, 4)
    }
    assert counts[(89, 4)] < 0.5 * counts[(89, None)]
    assert counts[(89, 1)] < counts[(89, 2)] < counts[(89, 4)]
    assert counts[(4, 4)] > counts[(4, None)]  # no gain (factors only) at full rank
