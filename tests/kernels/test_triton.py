"""The Triton kernel in Triton's CPU interpreter (TRITON_INTERPRET=1) against the sparse_torch
reference and the dense e3nn path: values, gradients and double gradients.

Tolerances: float64 inputs (float64 accumulation) agree with e3nn to 1e-12; float32 inputs
(float32 accumulation) to 2e-6 of the largest output; bfloat16 inputs to 1e-2 of it (the
output is rounded to bfloat16, 8 bits).
"""

from __future__ import annotations

import pytest
import torch

from macelab.kernels import set_backend

from .helpers import contraction, inputs

pytestmark = pytest.mark.usefixtures("interpret_triton")

SMALL = {"channels": 3, "max_ell": 1, "max_L": 2, "correlation": 3, "num_elements": 3}


def _outputs(module, features, node_attrs, backend):
    set_backend(module, backend)
    return module(features, node_attrs)


def test_triton_equals_e3nn_fp64():
    module = contraction(**SMALL)
    features, node_attrs = inputs(module, num_atoms=19)  # two atom blocks, the second partial
    expected = _outputs(module, features, node_attrs, "e3nn")
    actual = _outputs(module, features, node_attrs, "triton")
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=0)


def test_triton_fp32_and_active_correlation():
    module = contraction(**SMALL, dtype=torch.float32)
    module.set_correlation(2)
    features, node_attrs = inputs(module, num_atoms=7, dtype=torch.float32)
    expected = _outputs(module.double(), features.double(), node_attrs.double(), "e3nn")
    module.float()
    actual = _outputs(module, features, node_attrs, "triton")
    assert actual.dtype == torch.float32
    scale = expected.abs().max()
    assert (actual.double() - expected).abs().max() <= 2e-6 * scale


def test_triton_bf16_inputs():
    module = contraction(**SMALL, dtype=torch.float32)
    features, node_attrs = inputs(module, num_atoms=5, dtype=torch.float32)
    rounded = features.to(torch.bfloat16)
    expected = _outputs(module, rounded.float(), node_attrs, "sparse_torch")
    module.to(torch.bfloat16)  # weights in bf16, CG coefficients stay float32
    actual = _outputs(module, rounded, node_attrs.to(torch.bfloat16), "triton")
    assert actual.dtype == torch.bfloat16
    assert (actual.float() - expected).abs().max() <= 1e-2 * expected.abs().max()


def _first_and_second_derivatives(module, features, node_attrs, backend):
    """Forces-like dE/dA with its graph, then the weight gradient of a loss on dE/dA."""
    set_backend(module, backend)
    module.zero_grad()
    features = features.clone().requires_grad_(True)
    out = module(features, node_attrs)
    probe = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    energy = (out * probe).sum()
    (d_features,) = torch.autograd.grad(energy, features, create_graph=True)
    loss = (d_features**2).sum() + energy
    loss.backward()
    weight_grads = [p.grad.clone() for p in module.parameters()]
    return out.detach(), d_features.detach(), features.grad.clone(), weight_grads


def test_triton_gradients_and_double_backward_match_reference():
    module = contraction(**SMALL)
    features, node_attrs = inputs(module, num_atoms=4)
    reference = _first_and_second_derivatives(module, features, node_attrs, "sparse_torch")
    actual = _first_and_second_derivatives(module, features, node_attrs, "triton")
    for a, b in zip(actual[:3], reference[:3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    for a, b in zip(actual[3], reference[3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def _first_derivatives(module, features, node_attrs, backend):
    """dE/dA and dE/dW of a probe energy, no graph kept: the Triton backward kernel's case."""
    set_backend(module, backend)
    module.zero_grad()
    features = features.clone().requires_grad_(True)
    out = module(features, node_attrs)
    probe = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (out * probe).sum().backward()
    return features.grad.clone(), [p.grad for p in module.parameters()]


@pytest.mark.parametrize("per_element_sum", [True, False])
def test_triton_backward_kernel_matches_reference_fp64(per_element_sum, monkeypatch):
    """Both ways of summing dT (per element inside a program, or one atomic per atom), a
    partial atom block (19 atoms), channels below the block width, nu = 1..3 terms."""
    from macelab.kernels import contraction_kernels

    if not per_element_sum:
        monkeypatch.setattr(contraction_kernels, "MAX_REDUCED_ELEMENTS", 0)
    module = contraction(**SMALL)
    features, node_attrs = inputs(module, num_atoms=19)
    reference = _first_derivatives(module, features, node_attrs, "sparse_torch")
    actual = _first_derivatives(module, features, node_attrs, "triton")
    torch.testing.assert_close(actual[0], reference[0], atol=1e-12, rtol=0)
    assert all(g is not None for g in reference[1])
    for a, b in zip(actual[1], reference[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_triton_backward_kernel_fp32_and_features_only():
    """float32 within 1e-5 of the float64 reference's largest value; with frozen weights
    (as the calculator runs) only dE/dA is computed."""
    module = contraction(**SMALL, dtype=torch.float32)
    module.set_correlation(2)
    features, node_attrs = inputs(module, num_atoms=7, dtype=torch.float32)
    reference = _first_derivatives(module.double(), features.double(), node_attrs.double(), "e3nn")
    module.float().requires_grad_(False)
    set_backend(module, "triton")
    x = features.clone().requires_grad_(True)
    out = module(x, node_attrs)
    probe = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (grad,) = torch.autograd.grad((out * probe).sum(), x)
    assert grad.dtype == torch.float32
    assert (grad.double() - reference[0]).abs().max() <= 1e-5 * reference[0].abs().max()


def _second_derivatives_through_g(module, features, node_attrs, backend):
    """The weight, A and probe gradients of a loss on *both* first derivatives (dE/dA and
    dE/dW) of ``E = sum(m * probe)``, where the probe is learnable: so the incoming gradient
    g depends on a parameter, as the readout makes it in a model, and every second
    derivative (through A, T and g) is exercised."""
    set_backend(module, backend)
    params = list(module.parameters())
    features = features.clone().requires_grad_(True)
    out = module(features, node_attrs)
    probe = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device)
    probe = probe.reshape(out.shape)
    probe.requires_grad_(True)
    energy = (out * probe).sum()
    firsts = torch.autograd.grad(energy, [features, *params], create_graph=True)
    generator = torch.Generator().manual_seed(3)
    loss = sum(
        (d * torch.randn(d.shape, generator=generator, dtype=torch.float64).to(d)).sum()
        for d in firsts
    )
    return torch.autograd.grad(loss, [features, probe, *params])


@pytest.mark.parametrize("per_element_sum", [True, False])
@pytest.mark.parametrize("component_major", [True, False])
def test_triton_second_derivatives_match_reference(per_element_sum, component_major, monkeypatch):
    """Float64, against sparse_torch's autograd graph at rounding level: both layouts of A
    and both ways of summing dT."""
    from macelab.kernels import contraction_kernels, triton_contraction

    monkeypatch.setattr(triton_contraction, "COMPONENT_MAJOR", component_major)
    if not per_element_sum:
        monkeypatch.setattr(contraction_kernels, "MAX_REDUCED_ELEMENTS", 0)
    module = contraction(**SMALL)
    features, node_attrs = inputs(module, num_atoms=19)  # a partial second atom block
    reference = _second_derivatives_through_g(module, features, node_attrs, "sparse_torch")
    actual = _second_derivatives_through_g(module, features, node_attrs, "triton")
    for a, b in zip(actual, reference, strict=True):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, atol=1e-12 * b.abs().max(), rtol=0)


def test_triton_third_derivative_is_refused():
    """The second-derivative kernels are not differentiable again: a third derivative raises
    instead of returning a wrong (zero) value."""
    module = contraction(channels=2, max_ell=1, max_L=1, correlation=2, num_elements=2)
    features, node_attrs = inputs(module, num_atoms=2)
    set_backend(module, "triton")
    x = features.clone().requires_grad_(True)
    (first,) = torch.autograd.grad(module(x, node_attrs).pow(2).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="third derivatives"):
        torch.autograd.grad(second.pow(2).sum(), x)
