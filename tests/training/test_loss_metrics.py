"""The loss and the metrics against direct numpy computations of their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from macelab.training.loss import EnergyForcesLoss, LossWeights
from macelab.training.metrics import EnergyForceMetrics
from tests.training.helpers import synthetic_batch, synthetic_output


def test_weighted_mse_loss_matches_definition():
    batch = synthetic_batch([3, 5, 4])
    output = synthetic_output(batch)
    loss = EnergyForcesLoss(LossWeights(energy=2.0, forces=7.0))(output, batch)
    n = np.array([3, 5, 4], dtype=float)
    de = (output["energy"] - batch.energy).numpy() / n
    df = (output["forces"] - batch.forces).numpy()
    expected = 2.0 * np.mean(de**2) + 7.0 * np.mean(df**2)
    assert loss["loss"].item() == pytest.approx(expected, rel=1e-12)


def test_loss_ignores_structures_without_forces():
    batch = synthetic_batch([3, 5, 4], has_forces=[True, False, True])
    output = synthetic_output(batch)
    terms = EnergyForcesLoss(LossWeights(energy=0.0, forces=1.0))(output, batch)
    df = (output["forces"] - batch.forces).numpy()
    kept = np.concatenate([df[:3], df[8:]])
    assert terms["forces"].item() == pytest.approx(np.mean(kept**2), rel=1e-12)


def test_huber_loss_is_below_mse_for_large_errors():
    batch = synthetic_batch([4])
    output = {"energy": batch.energy + 5.0, "forces": batch.forces + 3.0, "stress": None}
    mse = EnergyForcesLoss(LossWeights(1.0, 1.0), kind="mse")(output, batch)["loss"]
    huber = EnergyForcesLoss(LossWeights(1.0, 1.0), kind="huber", huber_delta=0.1)(output, batch)
    assert huber["loss"].item() < mse.item()
    with pytest.raises(ValueError, match="unknown loss kind"):
        EnergyForcesLoss(kind="l3")


def test_metrics_over_batches_equal_metrics_over_the_whole_set():
    batches = [synthetic_batch([3, 5], seed=s, has_forces=[True, s != 1]) for s in range(4)]
    outputs = [synthetic_output(b, seed=10 + i) for i, b in enumerate(batches)]
    metric = EnergyForceMetrics()
    for output, batch in zip(outputs, batches, strict=True):
        metric.update(output, batch)
    result = metric.compute()

    de = np.concatenate(
        [(o["energy"] - b.energy).numpy() for o, b in zip(outputs, batches, strict=True)]
    )
    n = np.concatenate([np.array([3.0, 5.0]) for _ in batches])
    df = np.concatenate(
        [
            (o["forces"] - b.forces)[b.has_forces[b.batch]].numpy().ravel()
            for o, b in zip(outputs, batches, strict=True)
        ]
    )
    assert result["num_structures"] == 8
    assert result["num_force_components"] == df.size == (4 * 8 - 5) * 3
    assert result["energy_mae_meV"] == pytest.approx(1000 * np.mean(np.abs(de)), rel=1e-12)
    assert result["energy_rmse_meV"] == pytest.approx(1000 * math.sqrt(np.mean(de**2)), rel=1e-12)
    assert result["energy_per_atom_mae_meV"] == pytest.approx(
        1000 * np.mean(np.abs(de / n)), rel=1e-12
    )
    assert result["forces_mae_meV_per_A"] == pytest.approx(1000 * np.mean(np.abs(df)), rel=1e-12)
    assert result["forces_rmse_meV_per_A"] == pytest.approx(
        1000 * math.sqrt(np.mean(df**2)), rel=1e-12
    )


def test_metrics_without_forces_report_energy_only():
    batch = synthetic_batch([3, 4], has_forces=[False, False])
    metric = EnergyForceMetrics()
    metric.update(synthetic_output(batch), batch)
    result = metric.compute()
    assert "energy_rmse_meV" in result
    assert "forces_rmse_meV_per_A" not in result
    assert result["num_force_components"] == 0


def test_metric_sums_stay_float64_after_casting_the_module():
    metric = EnergyForceMetrics().to(torch.float32)
    assert metric.energy_sq.dtype == torch.float64


def test_whole_structure_energy_loss_of_the_paper():
    batch = synthetic_batch([3, 5])
    output = synthetic_output(batch)
    terms = EnergyForcesLoss(LossWeights(1.0, 0.0), energy_per_atom=False)(output, batch)
    de = (output["energy"] - batch.energy).numpy()
    assert terms["loss"].item() == pytest.approx(np.mean(de**2), rel=1e-12)
