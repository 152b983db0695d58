"""Two short TINY training runs through stage two, eager and with the compiled step, with
plain SGD (no rounding amplification): shared by the GPU gate and its CPU twin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from macelab.train import run_training
from tests.training.conftest import TINY

# Stage two from epoch 1 (loss weights, energy term and learning rate change: the step's
# second program), plain SGD.
STAGE_TWO_SGD = [
    "training.stage_two.start_epoch=1",
    "training.stage_two.energy_per_atom=true",
    "training.loss.energy_per_atom=false",
    "training.optimizer.name=sgd",
    "training.optimizer.lr=1e-3",
    "training.stage_two.lr=1e-4",
]


def train_eager_and_compiled(
    compose_config, folder: Path, device: list[str], flags: list[str]
) -> dict[bool, dict]:
    """``{False: eager results.json, True: compiled results.json}`` of the TINY run on
    ``device`` overrides, the second with ``flags``."""
    common = [o for o in TINY if o != "trainer.accelerator=cpu"] + device + STAGE_TWO_SGD
    results = {}
    for compiled in (False, True):
        run = folder / f"compiled_{compiled}"
        extra = flags if compiled else []
        cfg = compose_config("train", [*common, *extra], output_dir=run)
        run_training(cfg)
        results[compiled] = json.loads((run / "results.json").read_text())
    return results


def assert_same_test_metrics(results: dict[bool, dict], rel: float = 1e-8) -> None:
    """Every float test metric of the compiled run equals the eager run's to ``rel``."""
    for test_set, metrics in results[False].items():
        for key, value in metrics.items():
            if isinstance(value, float):
                assert results[True][test_set][key] == pytest.approx(value, rel=rel), (
                    test_set,
                    key,
                )
