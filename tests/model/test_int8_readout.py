"""The INT8 readout (macelab.model.quantized): exact integer products, the extracted e3nn
matrices, the straight-through backward, symmetry, batching and state-dict round trips."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from e3nn import o3

from macelab.model.quantized import (
    Int8Linear,
    Int8TrainingError,
    int8_matmul,
    int8_matmul_backend,
    quantize_readout,
    quantize_rows,
    quantize_weight,
    readout_format,
    scalar_matrix,
)
from tests.model.helpers import (
    batch,
    graph,
    random_orthogonal,
    read_molecule,
    relative_error,
    small_model,
)


class DequantizedLinear(torch.nn.Module):
    """Reference: ``x[:, index] @ (s_w Wq).T`` in float, i.e. the INT8 layer without the
    activation rounding (what its backward differentiates)."""

    def __init__(self, layer: Int8Linear) -> None:
        super().__init__()
        self.index = layer.input_index
        self.weight = layer.weight_int8.to(torch.float64) * layer.weight_scale.double()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.index) @ self.weight.to(x.dtype).T


def dequantized_copy(int8_model: torch.nn.Module) -> torch.nn.Module:
    """The INT8 model with every Int8Linear replaced by :class:`DequantizedLinear`."""
    model = copy.deepcopy(int8_model)
    for readout in model.readouts:
        for name, child in list(readout.named_children()):
            if isinstance(child, Int8Linear):
                setattr(readout, name, DequantizedLinear(child))
    return model


@pytest.mark.parametrize("m, k, n", [(3, 13, 1), (40, 16, 16), (17, 8, 8), (1, 5, 3)])
@pytest.mark.parametrize("pad", [False, True])
def test_int8_matmul_is_the_exact_integer_product(m, k, n, pad):
    generator = torch.Generator().manual_seed(m * k * n)
    a = torch.randint(-127, 128, (m, k), generator=generator, dtype=torch.int8)
    b = torch.randint(-127, 128, (n, k), generator=generator, dtype=torch.int8)
    product = int8_matmul(a, b, pad=pad)  # pad=True: the CUDA path's shapes, on the CPU
    assert product.dtype == torch.int32 and product.shape == (m, n)
    assert torch.equal(product.long(), a.long() @ b.long().T)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int8_matmul_on_cuda_uses_int_mm_and_is_exact():
    assert int8_matmul_backend("cuda") == "torch._int_mm"
    generator = torch.Generator().manual_seed(0)
    for m, k, n in ((3, 13, 1), (1000, 256, 16), (40, 16, 1)):
        a = torch.randint(-127, 128, (m, k), generator=generator, dtype=torch.int8)
        b = torch.randint(-127, 128, (n, k), generator=generator, dtype=torch.int8)
        product = int8_matmul(a.cuda(), b.cuda()).cpu()
        assert torch.equal(product.long(), a.long() @ b.long().T)


def test_int8_linear_equals_the_dequantized_reference_to_rounding():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 12, generator=generator, dtype=torch.float64)
    weight[2] = 0.0  # an all-zero output channel stays zero
    index = torch.tensor([0, 1, 2, 3, 4, 5, 9, 10, 11, 12, 13, 14])
    layer = Int8Linear(weight, index, dim_in=20).eval()
    x = torch.randn(30, 20, generator=generator, dtype=torch.float64) * torch.rand(30, 1) * 5
    x[7] = 0.0  # an all-zero row too

    x_int8, x_scale = quantize_rows(x[:, index])
    w_int8, w_scale = quantize_weight(weight)
    reference = (x_int8.double() * x_scale[:, None]) @ (w_int8.double() * w_scale[:, None]).T
    y = layer(x)
    assert torch.allclose(y, reference, rtol=1e-12, atol=1e-14)
    assert torch.equal(y[:, 2], torch.zeros(30, dtype=torch.float64))
    assert torch.equal(y[7], torch.zeros(5, dtype=torch.float64))
    # the quantisation error itself: half a step of each factor, per product term
    exact = x[:, index] @ weight.T
    x_abs, w_abs = x[:, index].abs(), weight.abs()
    bound = (x_scale[:, None] / 2) @ w_abs.sum(1)[None, :] + (x_abs.sum(1)[:, None] + 12 * (
        x_scale[:, None] / 2
    )) * (w_scale[None, :] / 2)  # fmt: skip
    assert ((y - exact).abs() <= bound + 1e-12).all()
    assert (y - exact).abs().max() > 0  # it is quantised


def test_scalar_matrix_is_exactly_the_e3nn_linear_on_the_0e_channels():
    irreps = o3.Irreps("4x0e + 3x1o + 2x0e + 1x2e")
    linear = o3.Linear(irreps, o3.Irreps("3x0e"))
    weight, index = scalar_matrix(linear)
    assert index.tolist() == [0, 1, 2, 3, 13, 14]
    x = torch.randn(10, irreps.dim)
    assert torch.allclose(linear(x), x[:, index] @ weight.T, rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError, match="scalar outputs"):
        scalar_matrix(o3.Linear(irreps, o3.Irreps("1x1o")))


def test_backward_uses_the_dequantized_weights_and_training_is_refused():
    generator = torch.Generator().manual_seed(1)
    layer = Int8Linear(torch.randn(4, 6, generator=generator), torch.arange(6), 6).eval()
    x = torch.randn(8, 6, generator=generator, requires_grad=True)
    grad_y = torch.randn(8, 4, generator=generator)
    (grad_x,) = torch.autograd.grad(layer(x), x, grad_y)
    weight = layer.weight_int8.double() * layer.weight_scale.double()[:, None]
    assert torch.allclose(grad_x, grad_y @ weight, rtol=1e-12)
    assert torch.allclose(layer.dequantized_weight().double(), weight, rtol=1e-7)

    with pytest.raises(Int8TrainingError, match="create_graph"):
        torch.autograd.grad(layer(x), x, grad_y, create_graph=True)
    with pytest.raises(Int8TrainingError, match="inference only"):
        layer.train()(x)


def _molecule(name="3bpa"):
    return read_molecule(name)


def test_quantize_readout_touches_only_the_readouts():
    model = small_model().eval()
    int8 = quantize_readout(copy.deepcopy(model))
    assert readout_format(model) == "float" and readout_format(int8) == "int8"
    kinds = [type(m).__name__ for m in int8.readouts[1].children()]
    assert kinds == ["Int8Linear", "Activation", "Int8Linear"]
    float_state, int8_state = model.state_dict(), int8.state_dict()
    for key, value in int8_state.items():
        if not key.startswith("readouts."):
            assert torch.equal(value, float_state[key]), key

    g = graph(_molecule())
    exact = model(g, compute_forces=True)
    quantized = int8(g, compute_forces=True)
    reference = dequantized_copy(int8)(g, compute_forces=True)
    # forces: those of the dequantised-weight model (straight-through activations), up to
    # the MLP readout's activation derivative taken at the rounded hidden features
    assert 0 < relative_error(quantized["forces"], reference["forces"]) < 2e-3
    # energy: the dequantised model up to activation rounding; both near the float model
    difference = float((quantized["energy"] - exact["energy"]).abs())
    assert 0 < difference < 1e-2 * float(exact["interaction_energy"].abs()) + 0.1
    assert relative_error(quantized["forces"], exact["forces"]) < 0.05


def test_linear_readout_forces_are_exactly_the_dequantized_models():
    """One interaction: only a linear readout, so the straight-through forces are exactly
    -dE/dr of the model with dequantised weights."""
    int8 = quantize_readout(small_model(num_interactions=1, correlation=2).eval())
    g = graph(_molecule("ethanol"))
    quantized = int8(g, compute_forces=True)
    reference = dequantized_copy(int8)(g, compute_forces=True)
    assert relative_error(quantized["forces"], reference["forces"]) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_symmetry_errors_stay_at_the_float_models_level(dtype):
    model = small_model().eval().to(dtype)
    int8 = quantize_readout(copy.deepcopy(model))
    atoms = _molecule()
    errors = {}
    for label, m in (("float", model), ("int8", int8)):
        worst = [0.0, 0.0]
        original = m(graph(atoms), compute_forces=True)
        for seed, reflect in ((0, False), (1, True), (2, False)):
            rotation = random_orthogonal(seed, reflect)
            moved = atoms.copy()
            moved.positions = atoms.positions @ rotation.T
            out = m(graph(moved), compute_forces=True)
            rotated = original["forces"] @ torch.as_tensor(rotation.T, dtype=dtype)
            change = out["interaction_energy"] - original["interaction_energy"]
            energy = float(change.detach().abs())
            worst[0] = max(worst[0], energy / float(original["interaction_energy"].abs()))
            worst[1] = max(worst[1], relative_error(out["forces"], rotated))
        errors[label] = worst
    floor = 1e-13 if dtype == torch.float64 else 1e-6
    for quantity in (0, 1):
        assert errors["int8"][quantity] <= 10 * errors["float"][quantity] + floor, errors


def test_an_atoms_energy_does_not_depend_on_its_batch():
    """Per-atom activation scales: a molecule batched with others keeps its INT8 energy."""
    int8 = quantize_readout(small_model().eval())
    small, large = _molecule("ethanol"), _molecule("3bpa")
    alone = int8(graph(small), compute_forces=True)
    together = int8(batch([small, large]), compute_forces=True)
    assert abs(float(together["energy"][0] - alone["energy"][0])) < 1e-9
    assert relative_error(together["forces"][: len(small)], alone["forces"]) < 1e-12


def test_forces_integrate_to_the_int8_energy_along_a_path():
    """-dE/dr, loosely: the work of the INT8 forces along a 0.1 Å path equals the INT8
    energy change up to the energy's own rounding (its distance to the dequantised model)."""
    int8 = quantize_readout(small_model().eval())
    reference = dequantized_copy(int8)
    atoms = _molecule()
    rng = np.random.default_rng(0)
    direction = rng.normal(size=atoms.positions.shape)
    direction *= 0.1 / np.abs(direction).max()
    steps = np.linspace(0.0, 1.0, 11)
    energies, powers, rounding = [], [], []
    for t in steps:
        moved = atoms.copy()
        moved.positions = atoms.positions + t * direction
        out = int8(graph(moved), compute_forces=True)
        assert torch.isfinite(out["forces"]).all()
        energies.append(float(out["energy"]))
        powers.append(float((out["forces"].detach().numpy() * direction).sum()))
        rounding.append(float(out["energy"] - reference(graph(moved))["energy"]))
    work = -np.trapezoid(powers, steps)
    change = energies[-1] - energies[0]
    tolerance = 2 * max(abs(r) for r in rounding) + 1e-4
    assert abs(change - work) < tolerance, (change, work, tolerance)
    assert abs(work) > 1e-3  # the path is long enough to test something


def test_state_dict_round_trip_through_a_float_model(tmp_path):
    int8 = quantize_readout(small_model(seed=0).eval())
    fresh = small_model(seed=1).eval()  # other weights, float readouts
    fresh.load_state_dict(int8.state_dict())
    assert readout_format(fresh) == "int8"
    g = graph(_molecule())
    a, b = int8(g, compute_forces=True), fresh(g, compute_forces=True)
    assert torch.equal(a["energy"], b["energy"]) and torch.equal(a["forces"], b["forces"])
    path = tmp_path / "model.pt"
    torch.save(int8, path)
    loaded = torch.load(path, weights_only=False)
    assert torch.equal(loaded(g)["energy"], a["energy"])
