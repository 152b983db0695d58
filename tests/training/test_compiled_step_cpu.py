"""The compiled training step in the Lightning loop, through stage two, on a CPU.

Inductor compiles the traced step for CUDA only, so here the same make_fx trace runs through
``aot_eager`` (every aten operation of the trace, no code generation): what this checks is
the integration (programs per loss-weight key, stage two's second program, gradients handed
to Lightning's backward through the loss's hook, and added up under gradient accumulation),
not Inductor. With plain SGD in float64 the compiled run's test metrics equal the eager
run's. The GPU gate with Inductor
and CUDA graphs is tests/training/test_compiled_step_gpu.py.
"""

from __future__ import annotations

import pytest

import macelab.training.steps as steps
from macelab.speed.compiled_train import CompiledTrainStep
from tests.training.stage_two_runs import assert_same_test_metrics, train_eager_and_compiled

pytestmark = pytest.mark.slow

# TINY with one interaction, l_max 1 and 3 training batches: tracing is what costs here.
CPU_SMALL = [
    "trainer.accelerator=cpu",
    "model.num_interactions=1",
    "model.max_ell=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "+trainer.accumulate_grad_batches=2",  # the hook scales by 1/2 and adds the two halves
]


def test_compiled_training_through_stage_two_matches_eager_on_cpu(
    compose_config, tmp_path, monkeypatch
):
    built = []

    def aot_eager_step(*args, **kwargs):
        built.append(CompiledTrainStep(*args, backend="aot_eager", **kwargs))
        return built[-1]

    monkeypatch.setattr(steps, "CompiledTrainStep", aot_eager_step)
    results = train_eager_and_compiled(
        compose_config, tmp_path, CPU_SMALL, ["runtime.compile=true"]
    )
    assert len(built) == 1
    # one program per (bucket, loss key): stage one and stage two, full and short batches
    keys = {key for _, key in built[0].programs}
    assert len(keys) == 2, keys
    assert_same_test_metrics(results)
