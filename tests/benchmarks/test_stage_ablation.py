"""The per-stage ablation's recipes compose into policies that lower exactly their group."""

from __future__ import annotations

import fnmatch
import shlex
from pathlib import Path

import pytest
import torch

from benchmarks.studies import stage_ablation
from macelab.model import build_model
from macelab.model.stages import stage_names
from macelab.precision import policy_of
from macelab.runtime import RuntimePlan
from tests.model.helpers import TINY_CONFIG, e3nn_without_script
from tests.training.conftest import compose_run_config

LINES = stage_ablation.recipes(list(stage_ablation.GROUPS), ["bf16", "fp16"])
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A two-interaction model (tiny widths): the paper model's stage names."""
    with e3nn_without_script():
        return build_model({**TINY_CONFIG, "num_interactions": 2})


@pytest.mark.parametrize("line", LINES[1:], ids=[line.split("=")[0] for line in LINES[1:]])
def test_each_recipe_lowers_its_group_only(line: str, model, tmp_path: Path) -> None:
    name, overrides = line.split("=", 1)
    group, dtype = name.rsplit("_", 1)
    cfg = compose_run_config("train", ["experiment=acac", *shlex.split(overrides)], tmp_path)
    assert RuntimePlan.from_mapping(cfg.runtime) == RuntimePlan(cuda_graphs=True)
    resolved = policy_of(cfg.precision).resolve(model)
    lowered = {stage for stage, p in resolved.items() if p.compute != torch.float32}
    patterns = stage_ablation.GROUPS[group]
    expected = {s for s in stage_names(model) if any(fnmatch.fnmatchcase(s, p) for p in patterns)}
    assert lowered == expected and expected
    assert {resolved[stage].compute for stage in lowered} == {DTYPES[dtype]}


def test_baseline_first_and_unknown_groups_refused() -> None:
    assert LINES[0].startswith("fp32_graphs=precision=32 ")
    with pytest.raises(SystemExit):
        stage_ablation.main(["--groups", "readout,nonsense"])
