"""The fused convolution (tensor product + neighbour sum, Eq. 8) in Triton's CPU interpreter
against e3nn's TensorProduct followed by index_add: values, first derivatives (forces) and
second derivatives (the weight gradient of a force loss), plus the probed plan itself.

Tolerances: float64 agrees with e3nn to 1e-12 of the largest value; float32 inputs
(float32 accumulation) to 1e-6 of it; bfloat16 inputs are compared with float32 on the same
rounded inputs (the kernel accumulates in float32, so the only difference is the rounding of
the products' order) to 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.studies.triton_conv import e3nn_sum as _e3nn_sum
from benchmarks.studies.triton_conv import fused_sum as _fused_sum
from macelab.kernels.conv_plan import conv_plan, reference_messages

from .helpers import channelwise_tensor_product as _tensor_product

pytestmark = pytest.mark.usefixtures("interpret_triton")


def _graph_inputs(tp, n: int, n_edges: int, dtype=torch.float64, seed=0):
    """Random features, harmonics and weights on a random graph in which atom 0 receives
    nothing and atom 1 sends nothing (empty CSR rows on both sides)."""
    generator = torch.Generator().manual_seed(seed)
    sender = torch.randint(1, n, (n_edges,), generator=generator)
    receiver = torch.randint(1, n, (n_edges,), generator=generator)
    sender[sender == 1] = 2
    tensors = [
        torch.randn(n, tp.irreps_in1.dim, generator=generator, dtype=torch.float64),
        torch.randn(n_edges, tp.irreps_in2.dim, generator=generator, dtype=torch.float64),
        torch.randn(n_edges, tp.weight_numel, generator=generator, dtype=torch.float64),
    ]
    tensors = [t.to(dtype).requires_grad_(True) for t in tensors]
    return (*tensors, sender, receiver)


def _derivatives(sum_fn, tp, h, y, w, sender, receiver):
    """The sum, its VJP for a fixed probe (forces-like, with graph), then the gradients of
    a loss on that VJP (the double backward of force training)."""
    out = sum_fn(tp, h, y, w, sender, receiver)
    probe = torch.linspace(-1, 1, out.numel(), dtype=torch.float64, device=out.device)
    probe = probe.reshape(out.shape)
    first = torch.autograd.grad(out, (h, y, w), probe.to(out.dtype), create_graph=True)
    loss = sum((g.double() ** 2 * (k + 1)).sum() for k, g in enumerate(first))
    second = torch.autograd.grad(loss, (h, y, w))
    return [out, *first, *second]


def _assert_close(actual, expected, tolerance):
    for k, (got, want) in enumerate(zip(actual, expected, strict=True)):
        scale = want.detach().abs().max()
        error = (got.detach().double() - want.detach().double()).abs().max()
        assert error <= tolerance * scale, f"output {k}: {error:.2e} > {tolerance} x {scale:.2e}"


@pytest.mark.parametrize(
    ("channels", "max_L", "max_ell"),
    [(3, 0, 2), (5, 1, 2), (20, 2, 3)],  # first layer; a partial block; the paper's irreps
)
def test_fused_sum_and_derivatives_match_e3nn_fp64(channels, max_L, max_ell):
    tp = _tensor_product(channels, max_L, max_ell)
    # 5 atoms, 12 edges (empty rows, repeated pairs): Triton's interpreter runs each program
    # in Python, so its cost grows with atoms x neighbours; 6 atoms and 23 edges took 1.5-2x
    # as long and reached no other branch
    args = _graph_inputs(tp, n=5, n_edges=12)
    expected = _derivatives(_e3nn_sum, tp, *args)
    actual = _derivatives(_fused_sum, tp, *args)
    _assert_close(actual, expected, 1e-12)


def test_two_channel_blocks_fp64():
    """80 channels: one full 64-channel block and a masked one, in every kernel."""
    tp = _tensor_product(80, 1, 1)
    args = _graph_inputs(tp, n=4, n_edges=9)
    _assert_close(_derivatives(_fused_sum, tp, *args), _derivatives(_e3nn_sum, tp, *args), 1e-12)


def test_gradcheck_and_gradgradcheck():
    """Finite differences (random-projection form: the interpreter is slow) of the first and
    second derivatives, beside the e3nn comparison above."""
    tp = _tensor_product(1, 1, 1)
    h, y, w, sender, receiver = _graph_inputs(tp, n=3, n_edges=4)

    def fn(h, y, w):
        return _fused_sum(tp, h, y, w, sender, receiver)

    assert torch.autograd.gradcheck(fn, (h, y, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (h, y, w), fast_mode=True)


def test_fp32_and_bf16_inputs():
    tp = _tensor_product(8, 2, 2)
    h, y, w, sender, receiver = _graph_inputs(tp, n=5, n_edges=12)
    expected = _e3nn_sum(tp, h, y, w, sender, receiver).detach()
    fp32 = [t.detach().float() for t in (h, y, w)]
    out32 = _fused_sum(tp, *fp32, sender, receiver)
    assert out32.dtype == torch.float32
    _assert_close([out32], [expected], 1e-6)
    bf16 = [t.to(torch.bfloat16) for t in fp32]
    out16 = _fused_sum(tp, *bf16, sender, receiver)
    assert out16.dtype == torch.float32  # accumulated and returned in float32
    rounded = _e3nn_sum(tp, *[t.double() for t in bf16], sender, receiver).detach()
    _assert_close([out16], [rounded], 1e-5)


def test_no_edges_gives_zeros_and_zero_gradients():
    tp = _tensor_product(3, 1, 1)
    h, y, w, _, _ = _graph_inputs(tp, n=3, n_edges=4)
    empty = torch.zeros(0, dtype=torch.long)
    out = _fused_sum(tp, h, y[:0], w[:0], empty, empty)
    assert out.shape == (3, tp.irreps_out.dim) and not out.any()
    (grad_h,) = torch.autograd.grad(out.sum(), h, allow_unused=True)
    assert grad_h is not None and not grad_h.any()


def test_plan_matches_e3nn_and_refuses_mixed_multiplicities():
    tp = _tensor_product(4, 2, 3)
    plan = conv_plan(tp)
    assert plan.num_paths == len(tp.instructions) and plan.channels == 4
    h, y, w, sender, _ = _graph_inputs(tp, n=3, n_edges=5)
    torch.testing.assert_close(
        reference_messages(plan, h, y, w, sender), tp(h[sender], y, w), atol=1e-12, rtol=0
    )
    with pytest.raises(ValueError, match="one multiplicity"):
        conv_plan(_tensor_product(4, 1, 1, node_irreps="4x0e + 2x1o"))


def test_set_backend_switches_the_convolution():
    from macelab.kernels import set_backend
    from macelab.precision_report import random_model

    model = random_model("tiny", correlation=2)
    convs = [m.conv_backend for m in set_backend(model, "triton").interactions]
    assert convs == ["triton"] * len(model.interactions)
    set_backend(model, "triton", convolution=False)
    assert {m.conv_backend for m in model.interactions} == {"e3nn"}
    set_backend(model, "triton")
    set_backend(model, "e3nn")
    assert {m.conv_backend for m in model.interactions} == {"e3nn"}
    set_backend(model, "sparse_torch", convolution=True)  # beside any contraction backend
    assert {m.conv_backend for m in model.interactions} == {"triton"}


def test_edge_chunk_with_the_fused_convolution_is_reported(caplog):
    """edge_chunk does not apply to the fused convolution: said in the log, whichever of
    the two is set first."""
    from macelab.kernels import set_backend
    from macelab.precision_report import random_model

    model = random_model("tiny", correlation=2)
    model.set_edge_chunk(100)
    assert "edge_chunk is not used" not in caplog.text
    set_backend(model, "triton")
    assert "edge_chunk is not used with the fused convolution" in caplog.text
    caplog.clear()
    set_backend(model, "triton", convolution=False)
    model.set_edge_chunk(50)
    assert "edge_chunk is not used" not in caplog.text
    set_backend(model, "e3nn", convolution=True)
    model.set_edge_chunk(10)
    assert "edge_chunk is not used" in caplog.text


def test_fused_convolution_where_triton_cannot_run(monkeypatch):
    """On a CPU without the interpreter the fused convolution is refused: a ValueError from
    set_backend and a one-paragraph ConfigError from the runtime plan."""
    from macelab.errors import ConfigError
    from macelab.kernels import set_backend
    from macelab.precision_report import random_model
    from macelab.runtime import RuntimePlan, apply_runtime

    if torch.cuda.is_available():
        pytest.skip("Triton runs on this machine's GPU")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model = random_model("tiny", correlation=2)
    with pytest.raises(ValueError, match=r"fused convolution .* cannot run"):
        set_backend(model, "e3nn", convolution=True)
    with pytest.raises(ConfigError, match=r"runtime\.fused_convolution=True"):
        apply_runtime(model, RuntimePlan(fused_convolution=True))
    assert apply_runtime(model, RuntimePlan()) is model


def test_fused_convolution_under_policy_safe():
    """Under policy_safe the fused path takes bf16 inputs (the tensor_product stage's dtype),
    accumulates in fp32 and hands the aggregation stage's dtype on; its force error against
    float64 stays within the e3nn path's own policy_safe error (x1.5 + rounding slack)."""
    from ase.build import molecule

    from macelab.kernels import set_backend
    from macelab.precision.inference import for_inference

    from ..model.helpers import batch, small_model

    model = small_model(seed=1, channels=4, max_L=1, max_ell=2, correlation=3)
    structures = [molecule("CH3CH2OH")]
    reference = model(batch(structures), compute_forces=True)["forces"]
    errors, dtypes = {}, {}
    for fused in (False, True):
        runner, context = for_inference(model, "policy_safe")
        set_backend(runner, "triton" if fused else "e3nn")
        runner.interactions[0].register_forward_hook(
            lambda m, i, o, fused=fused: dtypes.__setitem__(fused, o.dtype)
        )
        with context():
            forces = runner(batch(structures), compute_forces=True)
        forces = forces["forces"].double()
        errors[fused] = float((forces - reference).norm() / reference.norm())
    assert dtypes[True] == dtypes[False]
    assert 0 < errors[True] < 1.5 * errors[False] + 1e-4, errors
