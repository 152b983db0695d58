"""A whole tiny MACE gives the same energies, forces and force-loss weight gradients with
every contraction backend (float64; triton in its CPU interpreter, cueq in cuEquivariance's
pure-PyTorch method)."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule

from macelab.kernels import set_backend

from ..model.helpers import batch, small_model


def _predict(model, graphs, backend):
    set_backend(model, backend)
    model.zero_grad()
    output = model(graphs, compute_forces=True, training=True)
    loss = output["energy"].sum() + (output["forces"] ** 2).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output["energy"].detach(), output["forces"].detach(), grads


@pytest.mark.parametrize("backend", ["sparse_torch", "triton", "cueq"])
def test_backends_give_the_same_mace(backend, monkeypatch):
    if backend == "cueq":
        pytest.importorskip("cuequivariance_torch")
    if backend == "triton":
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = small_model(seed=1, channels=4, max_L=1, max_ell=2, correlation=3)
        # water and formic acid (3 and 5 atoms, H C O): two sizes, so the kernels' masked
        # loops over atoms and neighbours run; with ethanol (9 atoms, 8 neighbours each) in
        # place of water the fused convolution ran ~3.5x as many interpreted programs and the
        # triton case took ~1.3x the CPU time, checking nothing more
        graphs = batch([molecule("H2O"), molecule("HCOOH")])
        energy, forces, grads = _predict(model, graphs, "e3nn")
        energy_b, forces_b, grads_b = _predict(model, graphs, backend)
    finally:
        torch.set_default_dtype(previous)
    torch.testing.assert_close(energy_b, energy, atol=1e-10, rtol=0)
    torch.testing.assert_close(forces_b, forces, atol=1e-10, rtol=0)
    assert grads_b.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_b[name], grad, atol=1e-10, rtol=1e-10, msg=name)
