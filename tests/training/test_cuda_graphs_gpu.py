"""Training with ``training.cuda_graphs=true`` follows the eager run (GPU only). The compiled
step's counterpart is tests/training/test_compiled_step_gpu.py."""

from __future__ import annotations

import json

import pytest
import torch

from macelab.train import run_training
from tests.training.conftest import TINY

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_graphed_training_matches_eager(compose_config, tmp_path):
    """Same data, seed and float64 weights: the graphed run's test metrics equal the eager
    run's to rounding (the same steps, only replayed), and the model ends up the same."""
    common = [o for o in TINY if o != "trainer.accelerator=cpu"]
    common += ["trainer.accelerator=gpu", "trainer.devices=1", "training.stage_two.start_epoch=1"]
    results = {}
    for graphs in (False, True):
        run = tmp_path / f"graphs_{graphs}"
        cfg = compose_config(
            "train", [*common, f"training.cuda_graphs={str(graphs).lower()}"], output_dir=run
        )
        run_training(cfg)
        results[graphs] = json.loads((run / "results.json").read_text())
    for test_set, metrics in results[False].items():
        for name, value in metrics.items():
            if isinstance(value, float):
                assert results[True][test_set][name] == pytest.approx(value, rel=1e-6), name
