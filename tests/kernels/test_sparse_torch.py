"""The sparse CG terms and the sparse_torch contraction against the dense e3nn path."""

from __future__ import annotations

import pytest
import torch

from macelab.kernels import set_backend, sparse_contraction
from macelab.kernels.backend import check_backend, get_backend
from macelab.kernels.sparse_cg import coo_from_dense, dense_from_coo

from .helpers import contraction, inputs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coo_reconstructs_dense_U(dtype):
    module = contraction(max_ell=3, correlation=3, dtype=dtype)
    for irrep in module.contractions:
        for nu in range(1, irrep.correlation + 1):
            U = irrep.U(nu)
            indices, values = coo_from_dense(U)
            assert values.dtype == U.dtype == dtype
            assert indices.shape == (int((U != 0).sum()), U.dim())
            assert torch.equal(dense_from_coo(indices, values, U.shape), U)


def test_terms_cover_symmetrised_U():
    """sum over the (path, term) entries rebuilds U summed over permutations of k."""
    module = contraction(max_ell=2, correlation=3, num_elements=1)
    sparse = sparse_contraction(module)
    irrep = module.contractions[1]  # L = 1, rows 1..3
    U = irrep.U(3).double()  # [3, K, K, K, P]
    position = sparse.weight_keys.index((1, 3))
    first_path = sum(
        module.contractions[j].U(nu).shape[-1] for j, nu in sparse.weight_keys[:position]
    )
    rebuilt = torch.zeros_like(U)
    for q, p, c in zip(sparse.entry_term, sparse.entry_path, sparse.entry_coeff, strict=True):
        k = sparse.term_k[q]
        row, order = int(sparse.term_row[q]), int(sparse.term_order[q])
        if row in (1, 2, 3) and order == 3 and first_path <= p < first_path + U.shape[-1]:
            rebuilt[sparse.term_row[q] - 1, k[0], k[1], k[2], p - first_path] += c
    symmetrised = sum(U.permute(0, *perm, 4) for perm in _permutations((1, 2, 3)))
    merged = torch.zeros_like(U)  # the symmetrised U on sorted k only
    K = U.shape[1]
    for a in range(K):
        for b in range(a, K):
            for c in range(b, K):
                count = len({(a, b, c), (a, c, b), (b, a, c), (b, c, a), (c, a, b), (c, b, a)})
                merged[:, a, b, c] = symmetrised[:, a, b, c] * count / 6
    torch.testing.assert_close(rebuilt, merged, atol=1e-6, rtol=0)


def _permutations(axes):
    import itertools

    return list(itertools.permutations(axes))


CASES = [
    # (max_ell, max_L, correlation, active, extra)
    (2, 0, 1, None, {}),
    (2, 1, 2, None, {}),
    (2, 2, 3, None, {}),
    (3, 2, 3, None, {}),
    (1, 2, 3, 2, {}),
    (2, 2, 3, 1, {}),
    (2, 2, 3, None, {"element_rank": 2}),
    (2, 2, 3, None, {"reduced_cg": True}),
]


@pytest.mark.parametrize(("max_ell", "max_L", "correlation", "active", "extra"), CASES)
def test_sparse_torch_equals_e3nn_fp64(max_ell, max_L, correlation, active, extra):
    module = contraction(
        max_ell=max_ell, max_L=max_L, correlation=correlation, num_elements=4, **extra
    )
    if active is not None:
        module.set_correlation(active)
    features, node_attrs = inputs(module, num_atoms=9)
    expected = module(features, node_attrs)
    set_backend(module, "sparse_torch")
    assert get_backend(module) == "sparse_torch"
    actual = module(features, node_attrs)
    assert actual.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=0)
    # each output irrep alone (IrrepContraction's own forward)
    for irrep in module.contractions:
        alone = irrep(features, node_attrs)
        set_backend(irrep, "e3nn")
        torch.testing.assert_close(alone, irrep(features, node_attrs), atol=1e-12, rtol=0)


def test_set_backend_round_trip_keeps_state_dict():
    module = contraction()
    features, node_attrs = inputs(module)
    keys = list(module.state_dict())
    expected = module(features, node_attrs)
    set_backend(module, "sparse_torch")
    assert list(module.state_dict()) == keys
    set_backend(module, "e3nn")
    assert get_backend(module) == "e3nn" and "forward" not in module.__dict__
    assert torch.equal(module(features, node_attrs), expected)


def test_cache_follows_active_correlation():
    module = contraction(correlation=3)
    full = sparse_contraction(module)
    assert sparse_contraction(module) is full
    module.set_correlation(2)
    assert sparse_contraction(module).num_terms < full.num_terms


def test_unknown_or_unavailable_backend(monkeypatch):
    with pytest.raises(ValueError, match="unknown contraction backend 'cuda'"):
        check_backend("cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'triton' contraction backend cannot run"):
        set_backend(contraction(), "triton")


def test_gradcheck_and_gradgradcheck():
    module = contraction(channels=2, max_ell=1, max_L=1, correlation=3, num_elements=2)
    set_backend(module, "sparse_torch")
    features, node_attrs = inputs(module, num_atoms=3)
    features.requires_grad_(True)
    names = list(dict(module.named_parameters()))
    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]

    def fn(features, *weights):
        state = dict(zip(names, weights, strict=True))
        return torch.func.functional_call(module, state, (features, node_attrs))

    assert torch.autograd.gradcheck(fn, (features, *params))
    assert torch.autograd.gradgradcheck(fn, (features, *params))
