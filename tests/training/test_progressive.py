"""Progressive correlation order: skipped orders cost nothing, switching them on changes no
prediction, and the schedule runs (and resumes) in a real training run."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from macelab.errors import ConfigError
from macelab.train import run_training
from macelab.training.progressive import ProgressiveCorrelation
from tests.model.helpers import batch, silicon_cell, small_model
from tests.training.conftest import TINY


def _forces(model, inputs):
    return model(inputs, compute_forces=True)["forces"].detach()


def test_skipped_orders_are_not_computed():
    """With order 1 active, NaN weights of orders 2 and 3 never reach the output."""
    model = small_model()
    inputs = batch([silicon_cell(0)])
    model.set_correlation(1)
    with torch.no_grad():
        for product in model.products:
            for contraction in product.contraction.contractions:
                for nu, weights in contraction.weights.items():
                    if int(nu) > 1:
                        weights.fill_(float("nan"))
    assert bool(torch.isfinite(_forces(model, inputs)).all())
    assert model.active_correlation == [1, 1]


def test_switching_on_an_order_changes_no_prediction():
    model = small_model()
    inputs = batch([silicon_cell(1)])
    model.set_correlation(1, zero_inactive=True)
    low = _forces(model, inputs)
    model.set_correlation(2)
    torch.testing.assert_close(_forces(model, inputs), low, rtol=0, atol=0)
    model.set_correlation(None)
    torch.testing.assert_close(_forces(model, inputs), low, rtol=0, atol=0)
    assert model.active_correlation == [3, 3]


@pytest.mark.parametrize("schedule", [{5: 1}, {0: 3, 5: 2}, {0: 1, 3: 5}])
def test_bad_schedules_are_refused(schedule):
    with pytest.raises(ConfigError, match="schedule"):
        ProgressiveCorrelation(schedule)


@pytest.mark.slow
def test_schedule_runs_and_resumes(compose_config, tmp_path):
    common = [
        *TINY,
        "callbacks=progressive_correlation",
        "model.correlation=3",
        "callbacks.progressive_correlation.schedule=[[0,1],[1,2],[2,3]]",
    ]
    common = [o for o in common if not o.startswith("model.correlation=2")]
    run = tmp_path / "run"

    def orders() -> set[int]:
        metrics = pd.concat(pd.read_csv(p) for p in run.rglob("metrics.csv"))
        logged = metrics.dropna(subset=["train/correlation_order"])["train/correlation_order"]
        return set(logged.astype(int))

    run_training(compose_config("train", [*common, "trainer.max_epochs=2"], output_dir=run))
    assert orders() == {1, 2}
    resumed = compose_config(
        "train", [*common, "trainer.max_epochs=3", "ckpt_path=last"], output_dir=run
    )
    run_training(resumed)  # the CSV logger starts a new metrics file: only epoch 2
    assert 3 in orders()
