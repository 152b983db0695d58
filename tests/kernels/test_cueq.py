"""``model.backend=cueq``: the symmetric contraction through NVIDIA cuEquivariance (its
pure-PyTorch method on CPU) gives macelab's contraction at float64 rounding level: values,
gradients, the double gradients of force training, compressed and int8 element tables,
skipped correlation orders; a basis it cannot represent is refused."""

from __future__ import annotations

import pytest
import torch

from macelab.kernels import cueq_contraction, set_backend
from macelab.model.symmetric_contraction import SymmetricContraction

pytest.importorskip("cuequivariance_torch")

IRREPS_IN = "3x0e + 3x1o + 3x2e"
IRREPS_OUT = "3x0e + 3x1o"
ELEMENTS = 3


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(11, 3, 9, dtype=torch.float64, generator=generator)
    elements = torch.randint(0, ELEMENTS, (11,), generator=generator)
    one_hot = torch.nn.functional.one_hot(elements, ELEMENTS).to(torch.float64)
    return features.requires_grad_(), one_hot


def _contraction(**kwargs) -> SymmetricContraction:
    torch.manual_seed(3)
    module = SymmetricContraction(IRREPS_IN, IRREPS_OUT, 3, ELEMENTS, **kwargs)
    return module.to(torch.float64)


def _outputs(module: SymmetricContraction, backend: str) -> list[torch.Tensor]:
    """Output, its gradients (features, weights) and the weight gradients of a loss on the
    feature gradient (what force training differentiates)."""
    set_backend(module, backend)
    features, node_attrs = _inputs()
    out = module(features, node_attrs)
    parameters = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out**2).sum(), [features, *parameters], create_graph=True)
    second = torch.autograd.grad((grads[0] ** 2).sum(), parameters)
    return [out, *grads, *second]


@pytest.mark.parametrize(
    "kwargs", [{}, {"element_rank": 2}, {"int8": True}], ids=["full", "low_rank", "int8"]
)
def test_cueq_matches_the_reference_in_float64(kwargs):
    module = _contraction(**kwargs)
    expected = _outputs(module, "e3nn")
    got = _outputs(module, "cueq")
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape
        assert float((a - b).detach().norm() / b.detach().norm()) < 1e-12


def test_cueq_skips_inactive_orders_like_the_reference():
    module = _contraction()
    module.set_correlation(2)
    features, node_attrs = _inputs(1)
    set_backend(module, "e3nn")
    expected = module(features, node_attrs)
    set_backend(module, "cueq")
    got = module(features, node_attrs)
    assert float((got - expected).norm() / expected.norm()) < 1e-12
    module.set_correlation(None)  # all orders again: a different function
    assert float((module(features, node_attrs) - got).norm()) > 1e-3


def test_a_basis_cuequivariance_cannot_represent_is_refused(monkeypatch):
    module = _contraction()
    real = cueq_contraction._our_basis

    def perturbed(module, x):  # one extra column that is no polynomial of this degree
        basis, keys = real(module, x)
        basis[:, 0] = torch.sin(x).repeat_interleave(basis.shape[0] // x.shape[0], 0)[:, 0]
        return basis, keys

    monkeypatch.setattr(cueq_contraction, "_our_basis", perturbed)
    set_backend(module, "cueq")
    features, node_attrs = _inputs()
    with pytest.raises(ValueError, match="does not reproduce macelab's"):
        module(features, node_attrs)
