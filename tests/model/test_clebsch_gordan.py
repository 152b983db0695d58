"""The generalised Clebsch-Gordan bases of the product basis (Eq. 10) and their contraction."""

from __future__ import annotations

import math

import pytest
import torch
from e3nn import o3

from macelab.interop.cg_basis import BasisMismatchError, translate_path_weights
from macelab.model.clebsch_gordan import coupling_trees, symmetric_basis, symmetrise
from macelab.model.symmetric_contraction import SymmetricContraction

from .helpers import e3nn_without_script, random_orthogonal, small_model


def _rotate_inputs(U: torch.Tensor, D_in: torch.Tensor) -> torch.Tensor:
    """U with every input axis contracted with D_in: U'[M, a, ...] = U[M, i, ...] D_in[i, a]."""
    nu = U.dim() - 2
    for axis in range(1, nu + 1):
        U = torch.movedim(torch.tensordot(U, D_in, dims=([axis], [0])), -1, axis)
    return U


CASES = [("0e + 1o", "1o", 3), ("0e + 1o + 2e", "2e", 3), ("0e + 1o + 2e + 3o", "0e", 2)]


@pytest.mark.parametrize(("irreps_in", "irrep_out", "nu"), CASES)
@pytest.mark.parametrize("basis", [coupling_trees, symmetric_basis])
def test_bases_are_equivariant(irreps_in, irrep_out, nu, basis):
    """U(D x, ..., D x) = D_L U(x, ..., x) for rotations and reflections."""
    U = basis(irreps_in, irrep_out, nu)
    assert U.shape[-1] > 0
    for seed, reflect in [(1, False), (2, True)]:
        R = torch.as_tensor(random_orthogonal(seed, reflect))
        D_in = o3.Irreps(irreps_in).D_from_matrix(R)
        D_out = o3.Irrep(irrep_out).D_from_matrix(R)
        left = _rotate_inputs(U, D_in)  # the map applied to rotated inputs D x
        right = torch.einsum("ab,b...->a...", D_out, U)
        assert torch.allclose(left, right, atol=1e-12)


def test_symmetric_basis_dimensions():
    """Sym^3(0e + 1o) holds 1o twice (s^2 v and the 1o of Sym^3 v), 0e twice (s^3, s v.v),
    2e once (s times the 2e of Sym^2 v): the reduced basis has exactly these sizes."""
    assert symmetric_basis("0e + 1o", "1o", 3).shape[-1] == 2
    assert symmetric_basis("0e + 1o", "0e", 3).shape[-1] == 2
    assert symmetric_basis("0e + 1o", "2e", 3).shape[-1] == 1
    assert symmetric_basis("0e + 1o", "1e", 2).shape[-1] == 0  # antisymmetric only
    assert coupling_trees("0e + 1o", "1e", 2).shape[-1] == 1  # the tree exists


@pytest.mark.parametrize(("irreps_in", "irrep_out", "nu"), [*CASES, ("0e + 1o + 2e", "1o", 4)])
def test_symmetric_basis_spans_symmetrised_trees(irreps_in, irrep_out, nu):
    trees = symmetrise(coupling_trees(irreps_in, irrep_out, nu))
    reduced = symmetric_basis(irreps_in, irrep_out, nu)
    D = o3.Irrep(irrep_out).dim
    assert torch.allclose(reduced, symmetrise(reduced), atol=1e-14)
    flat_reduced = reduced.reshape(-1, reduced.shape[-1])
    gram = flat_reduced.T @ flat_reduced
    assert torch.allclose(gram, D * torch.eye(gram.shape[0]), atol=1e-12)  # orthogonal, |.|^2 = D
    flat_trees = trees.reshape(-1, trees.shape[-1])
    assert torch.linalg.matrix_rank(flat_trees) == flat_reduced.shape[1]
    projection = flat_reduced @ (flat_reduced.T @ flat_trees) / D
    assert torch.allclose(projection, flat_trees, atol=1e-12)


def test_trees_have_component_normalisation():
    U = coupling_trees("0e + 1o + 2e", "2e", 3)
    norms = U.reshape(-1, U.shape[-1]).norm(dim=0)
    assert torch.allclose(norms, torch.full_like(norms, math.sqrt(5)))


def test_bases_are_deterministic():
    a = symmetric_basis("0e + 1o + 2e", "1o", 3)
    b = symmetric_basis("0e + 1o + 2e", "1o", 3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("correlation", [1, 2, 3, 4])
def test_reduced_and_full_contractions_agree(correlation):
    """The same function in both bases, with weights translated between them."""
    irreps_in = o3.Irreps("4x0e + 4x1o + 4x2e")
    irreps_out = o3.Irreps("4x0e + 4x1o")
    torch.manual_seed(correlation)
    with e3nn_without_script():
        full = SymmetricContraction(irreps_in, irreps_out, correlation, 3, reduced_cg=False)
        reduced = SymmetricContraction(irreps_in, irreps_out, correlation, 3, reduced_cg=True)
    with torch.no_grad():
        for a, b in zip(full.contractions, reduced.contractions, strict=True):
            for nu, weights in a.weights.items():
                b.weights[nu].copy_(translate_path_weights(a.U(int(nu)), weights, b.U(int(nu))))
    x = torch.randn(6, 4, 9)
    attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).double()
    assert torch.allclose(full(x, attrs), reduced(x, attrs), atol=1e-12, rtol=0)
    n_reduced = sum(p.numel() for p in reduced.parameters())
    n_full = sum(p.numel() for p in full.parameters())
    assert n_reduced < n_full if correlation > 1 else n_reduced == n_full


def test_translation_refuses_a_basis_too_small():
    full = coupling_trees("0e + 1o", "0e", 3)
    partial = symmetric_basis("0e + 1o", "0e", 3)[..., :1]
    with pytest.raises(BasisMismatchError, match="does not span"):
        translate_path_weights(full, torch.randn(2, full.shape[-1], 3), partial)


def test_constants_stay_at_least_float32_and_are_not_saved():
    model = small_model(channels=4, max_L=1, max_ell=2, correlation=2)
    names = [n for n, _ in model.named_buffers() if ".U_" in n]
    assert names and not any(".U_" in key for key in model.state_dict())
    for dtype, expected in [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ]:
        model.to(dtype)
        assert {b.dtype for n, b in model.named_buffers() if ".U_" in n} == {expected}
        assert model.embedding.linear.weight.dtype == dtype
    contraction = model.products[0].contraction.contractions[0]
    assert torch.equal(contraction.U(2), contraction._constants[2])  # float64 restored exactly


def test_wigner_3j_sign_is_fixed():
    """macelab's 3j symbols are e3nn's up to a sign fixed by a rule that does not depend on
    the e3nn release (e3nn 0.4.4 and 0.6.0 differ in sign for, e.g., (1, 2, 2))."""
    from macelab._compat import wigner_3j

    for l1, l2, l3 in [(1, 1, 1), (1, 2, 2), (2, 2, 1), (1, 3, 3), (3, 3, 3), (2, 3, 4)]:
        ours, theirs = wigner_3j(l1, l2, l3), o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        assert torch.equal(ours, theirs) or torch.equal(ours, -theirs)
        flat = ours.flatten()
        assert flat[(flat.abs() > 1e-6 * flat.abs().max()).nonzero()[0, 0]] > 0
