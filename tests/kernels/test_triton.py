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
