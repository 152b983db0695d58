"""The frozen contraction (``macelab.kernels.freeze_contractions``): the calculator's fixed
weights give the reference model's numbers with ``T_nu`` kept, and never stale ones."""

from __future__ import annotations

import copy

import pytest
import torch

from macelab.calculator import MACECalculator
from macelab.kernels import freeze_contractions, set_backend
from macelab.kernels.frozen_contraction import FrozenIrrepContraction
from macelab.model.symmetric_contraction import IrrepContraction
from tests.model.helpers import batch, read_molecule, relative_error, small_model


def _frozen(model):
    model = copy.deepcopy(model).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _contractions(model) -> list[IrrepContraction]:
    return [c for p in model.products for c in p.contraction.contractions]


def _count_element_tensors(monkeypatch) -> list[int]:
    calls = []
    original = IrrepContraction.element_tensors

    def counted(self, nu):
        calls.append(nu)
        return original(self, nu)

    monkeypatch.setattr(IrrepContraction, "element_tensors", counted)
    return calls


@pytest.fixture(scope="module")
def model():
    return small_model(seed=3, channels=6, max_L=1, correlation=3)


def test_cached_tensors_give_the_same_energy_and_forces(model, monkeypatch):
    inputs = batch([read_molecule("3bpa", 2), read_molecule("acac", 1)])
    plain = _frozen(model)
    cached = _frozen(model)
    assert freeze_contractions(cached)
    expected = plain(inputs)
    calls = _count_element_tensors(monkeypatch)
    got = cached(inputs)
    assert calls == []  # T_nu came from the cache
    assert relative_error(got["energy"], expected["energy"]) < 1e-14
    assert relative_error(got["forces"], expected["forces"]) < 1e-13
    cached.set_correlation(2)  # a lower active order uses the cached tensors it needs
    plain.set_correlation(2)
    expected = plain(inputs)
    calls.clear()
    assert relative_error(cached(inputs)["forces"], expected["forces"]) < 1e-13
    assert calls == []


def test_float32_cache_matches_float32_model(model):
    inputs = batch([read_molecule("3bpa", 0)])
    plain = _frozen(model).float()
    cached = _frozen(model).float()
    freeze_contractions(cached)
    expected, got = plain(inputs), cached(inputs)
    assert got["forces"].dtype == torch.float32
    assert relative_error(got["forces"], expected["forces"]) < 1e-5


def test_cache_is_skipped_while_weights_train(model, monkeypatch):
    inputs = batch([read_molecule("ethanol")])
    trained = copy.deepcopy(model)
    freeze_contractions(trained)
    calls = _count_element_tensors(monkeypatch)
    output = trained(inputs, training=True)
    assert calls  # weights require gradients: T_nu computed in the graph
    output["energy"].sum().backward()
    weights = _contractions(trained)[0].weights["1"]
    assert weights.grad is not None and weights.grad.abs().sum() > 0


def test_changed_or_cast_weights_drop_the_cache(model, monkeypatch):
    inputs = batch([read_molecule("acac", 2)])
    cached = _frozen(model)
    freeze_contractions(cached)
    with torch.no_grad():
        for contraction in _contractions(cached):
            for weights in contraction.weights.values():
                weights.mul_(1.5)  # in place: the cached T_nu are stale now
    changed = set_backend(_frozen(cached), "e3nn")  # the reference class again
    calls = _count_element_tensors(monkeypatch)
    assert relative_error(cached(inputs)["forces"], changed(inputs)["forces"]) < 1e-13
    assert calls  # recomputed, not read from the stale cache
    cached.float()
    assert all(c._kept is None for c in _contractions(cached))


def test_calculator_caches_and_matches_the_model(model, monkeypatch):
    atoms = read_molecule("3bpa", 1)
    atoms.calc = MACECalculator(model)
    assert all(c._kept is not None for c in _contractions(atoms.calc.model))
    calls = _count_element_tensors(monkeypatch)
    forces = atoms.get_forces()
    assert calls == []
    expected = model(batch([atoms]))
    assert relative_error(forces, expected["forces"]) < 1e-13
    assert atoms.get_potential_energy() == pytest.approx(
        float(expected["energy"][0].detach()), abs=1e-12
    )


def test_all_elements_layout_matches_exactly(model, monkeypatch):
    """The layout used off the CPU (all elements in one matmul) gives the plain model's
    numbers bit for bit: the same matmul, with ``T_nu`` kept instead of recomputed."""
    import macelab.kernels.frozen_contraction as module

    monkeypatch.setattr(module, "GROUPED_DEVICE_TYPES", ())
    inputs = batch([read_molecule("3bpa", 3)])
    plain, cached = _frozen(model), _frozen(model)
    freeze_contractions(cached)
    assert not any(c._kept[1] for c in _contractions(cached))  # not grouped by element
    expected, got = plain(inputs), cached(inputs)
    assert torch.equal(got["energy"], expected["energy"])
    assert torch.equal(got["forces"], expected["forces"])


def test_cached_contraction_of_no_atoms_is_empty(model):
    cached = _frozen(model)
    freeze_contractions(cached)
    contraction = cached.products[0].contraction
    features = torch.zeros(0, 6, 16)
    out = contraction(features, torch.zeros(0, len(model.atomic_numbers)))
    assert out.shape == (0, contraction.irreps_out.dim)


def test_freezing_leaves_kernel_backends_and_set_backend_undoes_it(model):
    sparse = set_backend(_frozen(model), "sparse_torch")
    assert not freeze_contractions(sparse)
    assert not any(isinstance(c, FrozenIrrepContraction) for c in _contractions(sparse))
    frozen = _frozen(model)
    assert freeze_contractions(frozen)
    assert all(type(c) is FrozenIrrepContraction for c in _contractions(frozen))
    set_backend(frozen, "e3nn")
    assert all(type(c) is IrrepContraction for c in _contractions(frozen))


def test_a_contraction_under_a_precision_policy_is_left_as_it_is(model):
    from macelab.precision import load_precision, policy_of
    from macelab.precision.policy import apply_policy

    policed = _frozen(model)
    apply_policy(policed, policy_of(load_precision("policy_safe")))
    assert not freeze_contractions(policed)
    assert not any(isinstance(c, FrozenIrrepContraction) for c in _contractions(policed))
