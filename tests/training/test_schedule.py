"""The budget-following cosine learning rate and stage two's energy term."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import pytest
import torch

from macelab.train import run_training
from macelab.training.optim import BudgetCosine, SchedulerConfig, build_scheduler
from tests.training.conftest import TINY


def _optimizer(lr: float = 0.01) -> torch.optim.Optimizer:
    weights = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    return torch.optim.Adam([{"params": weights[:1]}, {"params": weights[1:], "lr": 2 * lr}], lr=lr)


def test_cosine_warms_up_then_anneals_to_the_final_factor_at_the_end_fraction():
    optimizer = _optimizer()
    schedule = BudgetCosine(optimizer, warmup_epochs=3, final_factor=0.05, end_fraction=0.8)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.0025, 0.005])
    schedule.step(0.0, 2)  # still warming up, cosine not started
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0075)
    schedule.step(0.4, 10)  # half way to the end: cosine at 1/2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (0.05 + 0.95 * 0.5))
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.02 * (0.05 + 0.95 * 0.5))
    for fraction in (0.8, 0.95, 1.3):  # held at the floor from end_fraction on
        schedule.step(fraction, 50)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.05)
    rates = []
    for k in range(11):
        schedule.step(k / 10 * 0.8, 20)
        rates.append(optimizer.param_groups[0]["lr"])
    assert all(a > b for a, b in itertools.pairwise(rates))


def test_cosine_state_round_trip_gives_the_same_rates():
    optimizer = _optimizer()
    schedule = BudgetCosine(optimizer, warmup_epochs=0, final_factor=0.01)
    schedule.step(0.37, 12)
    resumed_optimizer = _optimizer()
    resumed = BudgetCosine(resumed_optimizer, warmup_epochs=0, final_factor=0.01)
    resumed.load_state_dict(schedule.state_dict())
    assert [g["lr"] for g in resumed_optimizer.param_groups] == pytest.approx(
        [g["lr"] for g in optimizer.param_groups]
    )


def test_cosine_ends_at_stage_two_unless_told_otherwise():
    config = SchedulerConfig(name="cosine")
    assert build_scheduler(_optimizer(), config, 0.75)["scheduler"].end_fraction == 0.75
    assert build_scheduler(_optimizer(), config, None)["scheduler"].end_fraction == 1.0
    config.end_fraction = 0.5
    assert build_scheduler(_optimizer(), config, 0.75)["scheduler"].end_fraction == 0.5
    with pytest.raises(ValueError, match="end_fraction"):
        BudgetCosine(_optimizer(), end_fraction=0.0)


def _rows(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "metrics.csv") as stream:
        return [float(r[key]) for r in csv.DictReader(stream) if r.get(key)]


@pytest.mark.slow
def test_training_follows_the_cosine_over_its_epochs(compose_config):
    """A 4-epoch run logs, per epoch, lr = 0.01 · w(e) · cosine((e / 4) / 1)."""
    overrides = [
        *TINY,
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=2",
        "training.scheduler.name=cosine",
        "training.scheduler.warmup_epochs=1",
        "training.scheduler.final_factor=0.1",
        "training.optimizer.lr=0.01",
    ]
    cfg = compose_config("train", overrides)
    run_training(cfg)
    logged = _rows(Path(cfg.paths.output_dir), "lr")

    def expected(epoch: int) -> float:
        warmup = min(1.0, (epoch + 1) / 2)
        return 0.01 * warmup * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * epoch / 4)))

    assert logged == pytest.approx([expected(e) for e in range(4)], rel=1e-6)


@pytest.mark.slow
def test_stage_two_energy_per_atom_divides_the_energy_term_by_n_squared(compose_config, tmp_path):
    """Two runs identical through epoch 0; in stage two (epoch 1, one batch at the same
    weights) the energy term on per-atom energies is the whole-structure one over 15^2
    (every AcAc molecule has 15 atoms)."""
    common = [
        *TINY,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=1",
        "trainer.log_every_n_steps=1",
        "training.loss.energy_per_atom=false",
        "training.stage_two.start_epoch=1",
    ]
    energy_terms = {}
    for per_atom in ("true", "null"):
        flag = f"training.stage_two.energy_per_atom={per_atom}"
        cfg = compose_config("train", [*common, flag], output_dir=tmp_path / per_atom)
        run_training(cfg)
        energy_terms[per_atom] = _rows(Path(cfg.paths.output_dir), "train/loss_energy")
    first, second = energy_terms["true"], energy_terms["null"]
    assert first[0] == pytest.approx(second[0], rel=1e-12)  # stage one: the same run
    assert first[1] == pytest.approx(second[1] / 15**2, rel=1e-9)
