"""The compiled Triton kernels on a CUDA GPU (not the interpreter): forward, first and
second derivatives against the sparse_torch reference, float64 at rounding level and
float32 within 1e-5 of the largest value, at a size with full atom and channel blocks and
both ways of summing dT (4 elements: per element in a program; 12: one atomic per atom)."""

from __future__ import annotations

import pytest
import torch

from macelab.kernels import set_backend

from .helpers import contraction, inputs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _forward_and_gradients(module, features, node_attrs, backend):
    set_backend(module, backend)
    module.zero_grad()
    features = features.clone().requires_grad_(True)
    out = module(features, node_attrs)
    probe = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device)
    (out * probe.reshape(out.shape)).sum().backward()
    return [out.detach(), features.grad.clone(), *[p.grad.clone() for p in module.parameters()]]


def _assert_close_to_reference(actual, reference, dtype) -> None:
    """float64 at 1e-12, float32 at 1e-5 of each tensor's largest reference value."""
    for got, expected in zip(actual, reference, strict=True):
        assert got.dtype == dtype
        scale = expected.abs().max()
        tolerance = 1e-12 if dtype == torch.float64 else 1e-5
        assert (got.double() - expected).abs().max() <= tolerance * scale


@pytest.mark.parametrize("num_elements", [4, 12])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_kernels_match_reference(num_elements, dtype):
    pytest.importorskip("triton")
    module = contraction(channels=64, max_ell=3, max_L=2, num_elements=num_elements)
    features, node_attrs = inputs(module, num_atoms=100)
    module.to("cuda")
    features, node_attrs = features.cuda(), node_attrs.cuda()
    reference = _forward_and_gradients(module, features, node_attrs, "sparse_torch")
    module.to(dtype)
    actual = _forward_and_gradients(module, features.to(dtype), node_attrs.to(dtype), "triton")
    _assert_close_to_reference(actual, reference, dtype)


@pytest.mark.parametrize("num_elements", [4, 12])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_second_derivatives_match_reference(num_elements, dtype):
    """Every second derivative (through A, T and the incoming gradient) of the paper's
    contraction at 64 channels, as a force loss's weight gradient needs them."""
    pytest.importorskip("triton")
    from .test_triton import _second_derivatives_through_g

    module = contraction(channels=64, max_ell=3, max_L=2, num_elements=num_elements)
    features, node_attrs = inputs(module, num_atoms=100)
    module.to("cuda")
    features, node_attrs = features.cuda(), node_attrs.cuda()
    reference = _second_derivatives_through_g(module, features, node_attrs, "sparse_torch")
    module.to(dtype)
    actual = _second_derivatives_through_g(
        module, features.to(dtype), node_attrs.to(dtype), "triton"
    )
    _assert_close_to_reference(actual, reference, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_convolution_matches_e3nn(dtype):
    """The generated convolution kernels, compiled: the neighbour sum, its first derivatives
    and the second derivatives of a loss on them, against e3nn in float64 (96 channels: a
    full and a masked block; the paper's irreps, L <= 2 features, harmonics to l = 3)."""
    pytest.importorskip("triton")
    from .helpers import channelwise_tensor_product
    from .test_triton_conv import _derivatives, _e3nn_sum, _fused_sum, _graph_inputs

    tp = channelwise_tensor_product(96, 2, 3)
    h, y, w, sender, receiver = _graph_inputs(tp, n=60, n_edges=700)
    cuda = [t.detach().cuda().requires_grad_(True) for t in (h, y, w)]
    expected = _derivatives(_e3nn_sum, tp.cuda(), *cuda, sender.cuda(), receiver.cuda())
    low = [t.detach().to(dtype).requires_grad_(True) for t in cuda]
    actual = _derivatives(_fused_sum, tp, *low, sender.cuda(), receiver.cuda())
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5
    for k, (got, want) in enumerate(zip(actual, expected, strict=True)):
        scale = want.detach().abs().max()
        error = (got.detach().double() - want.detach()).abs().max()
        assert error <= tolerance * scale, f"output {k}: {error:.2e} vs {scale:.2e}"
