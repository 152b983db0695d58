"""The entry points that run a trained model (evaluate, md, export, quantize) compose the
runtime group (``conf/runtime``) and compute as its plan says: the run's own plan, with the
fields the group sets over it. md's old ``accelerate=`` maps onto ``runtime.cuda_graphs`` and
``runtime.compile`` with one deprecation line in the log.

The model is ``tests/fixtures/legacy_runtime_keys.ckpt`` (tiny, float32, trained with the
old keys ``model.backend=sparse_torch model.edge_chunk=40``), so the old names are read too.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import ase.io
import pytest
from ase.build import molecule

import macelab.calculator
import macelab.md
import macelab.quantize
import macelab.training.module
from macelab.errors import ConfigError
from macelab.evaluate import evaluation_plan, run_evaluation
from macelab.export import run_export
from macelab.md import md_plan, md_precision, run_md
from macelab.quantize import comparison_plan, run_quantize
from macelab.runtime import RuntimePlan, inference_precision
from macelab.train import run_training
from macelab.training.checkpoint import read_checkpoint
from tests.training.conftest import TINY, compose_config, compose_run_config  # noqa: F401

CKPT = Path(__file__).parents[1] / "fixtures" / "legacy_runtime_keys.ckpt"
RECORDED = RuntimePlan(backend="sparse_torch", edge_chunk=40)  # the run's plan, old names
ENTRY_POINTS = {
    "evaluate": [f"ckpt_path={CKPT}"],
    "md": [f"ckpt_path={CKPT}", "structure=x.xyz"],
    "export": [f"ckpt_path={CKPT}"],
    "quantize": [f"ckpt_path={CKPT}"],
}
# a cheap comparison: one batch of each AcAc test set (the fixture records no data)
TEST_DATA = ["data=acac", "accelerator=cpu", "limit_test_batches=1", "batch_size=2"]


def _hparams() -> dict:
    return read_checkpoint(CKPT)["hyper_parameters"]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_compose_the_runtime_group(name, compose_config):  # noqa: F811
    cfg = compose_config(name, ENTRY_POINTS[name])
    assert RuntimePlan.from_mapping(cfg.runtime) == RuntimePlan()
    cfg = compose_config(name, [*ENTRY_POINTS[name], "runtime.backend=sparse_torch"])
    assert RuntimePlan.from_mapping(cfg.runtime) == RuntimePlan(backend="sparse_torch")


@pytest.mark.parametrize(
    ("overrides", "expected", "deprecated"),
    [
        ([], RuntimePlan(), False),
        (["accelerate=null"], RuntimePlan(), False),
        (["accelerate=none"], RuntimePlan(), False),
        (["accelerate=graphs"], RuntimePlan(cuda_graphs=True), True),
        (["accelerate=compiled"], RuntimePlan(compile=True), True),
        (["runtime.cuda_graphs=true"], RuntimePlan(cuda_graphs=True), False),
        (["runtime.compile=true"], RuntimePlan(compile=True), False),
        (["accelerate=graphs", "runtime.cuda_graphs=true"], RuntimePlan(cuda_graphs=True), True),
        (
            ["runtime.backend=sparse_torch", "runtime.edge_chunk=9"],
            RuntimePlan(backend="sparse_torch", edge_chunk=9),
            False,
        ),
    ],
)
def test_md_maps_accelerate_onto_the_plan(overrides, expected, deprecated, compose_config, caplog):  # noqa: F811
    cfg = compose_config("md", [*ENTRY_POINTS["md"], *overrides])
    with caplog.at_level(logging.WARNING, logger="macelab.md"):
        assert md_plan(cfg) == expected
    lines = [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(lines) == (1 if deprecated else 0)
    if deprecated:
        assert "runtime." in lines[0].getMessage()


@pytest.mark.parametrize(
    "overrides",
    [
        ["accelerate=graphs", "runtime.compile=true"],
        ["accelerate=compiled", "runtime.cuda_graphs=true"],
        ["accelerate=fast"],
    ],
)
def test_md_refuses_what_it_cannot_map(overrides, compose_config):  # noqa: F811
    cfg = compose_config("md", [*ENTRY_POINTS["md"], *overrides])
    with pytest.raises(ConfigError, match=r"runtime\.(cuda_graphs|compile)=true"):
        md_plan(cfg)


def test_precision_policy_of_the_plan(compose_config):  # noqa: F811
    policy = RuntimePlan(precision_policy="policy_safe")
    assert md_precision("64", RuntimePlan()) == "64"
    assert md_precision("32", RuntimePlan()) == "32"
    assert md_precision("64", policy) == "policy_safe"  # the md group's default gives way
    assert md_precision("policy_safe", policy) == "policy_safe"
    with pytest.raises(ConfigError, match=r"precision=32 and runtime\.precision_policy"):
        md_precision("32", policy)
    assert inference_precision(None, policy)["name"] == "policy_safe"
    assert inference_precision({"name": "32"}, RuntimePlan()) == {"name": "32"}
    cfg = compose_config("md", [*ENTRY_POINTS["md"], "runtime.precision_policy=policy_safe"])
    assert md_precision(cfg.precision, md_plan(cfg)) == "policy_safe"


@pytest.mark.slow
def test_md_runs_with_the_plan(compose_config, tmp_path, monkeypatch):  # noqa: F811
    structure = tmp_path / "acetone.xyz"
    ase.io.write(structure, molecule("CH3COCH3"))
    built = []

    class Recording(macelab.calculator.MACECalculator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(macelab.md, "MACECalculator", Recording)
    common = [f"ckpt_path={CKPT}", f"structure={structure}", "steps=2", "device=cpu"]
    for overrides, backend, chunk in [
        ([], "sparse_torch", 40),  # the run's plan, from its old keys
        (["runtime.backend=e3nn", "runtime.edge_chunk=9"], "sparse_torch", 9),
        # kernels named: every model takes the plan's (e3nn, no chunks by default)
        (["runtime.fused_convolution=false", "accelerate=null"], "e3nn", None),
    ]:
        cfg = compose_config("md", [*common, *overrides], output_dir=tmp_path / "md")
        summary = run_md(cfg)
        assert summary["steps"] == 2 and math.isfinite(summary["drift_eV_per_atom"])
        model = built[-1].model
        contraction = type(model.products[0].contraction).__name__
        assert ("Sparse" in contraction) == (backend == "sparse_torch"), (overrides, contraction)
        assert {m.edge_chunk for m in model.interactions} == {chunk}


def test_evaluation_plan_is_the_runs_with_the_group_over_it(compose_config):  # noqa: F811
    hparams = _hparams()
    cfg = compose_config("evaluate", ENTRY_POINTS["evaluate"])
    assert evaluation_plan(cfg, hparams) == RECORDED
    cfg = compose_config("evaluate", [*ENTRY_POINTS["evaluate"], "runtime.edge_chunk=7"])
    assert evaluation_plan(cfg, hparams) == RuntimePlan(backend="sparse_torch", edge_chunk=7)
    for key in ("cuda_graphs", "compile"):
        cfg = compose_config("evaluate", [*ENTRY_POINTS["evaluate"], f"runtime.{key}=true"])
        with pytest.raises(ConfigError, match=rf"runtime\.{key}=True: evaluation runs"):
            evaluation_plan(cfg, hparams)


@pytest.mark.slow
def test_evaluate_runs_with_the_plan(compose_config, tmp_path, monkeypatch):  # noqa: F811
    """The fixture checkpoint (weights and EMA only: no optimiser state or position in the
    epoch) evaluates with its recorded plan and the group's field over it."""
    plans = []
    apply = macelab.training.module.apply_runtime
    monkeypatch.setattr(
        macelab.training.module,
        "apply_runtime",
        lambda model, plan: plans.append(plan) or apply(model, plan),
    )
    overrides = [*ENTRY_POINTS["evaluate"], *TEST_DATA, "plots=false", "runtime.edge_chunk=7"]
    results = run_evaluation(compose_config("evaluate", overrides))
    assert plans == [RuntimePlan(backend="sparse_torch", edge_chunk=7)]
    assert len(results) == 4
    for metrics in results.values():
        assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


def test_resuming_a_weights_only_checkpoint_is_refused(compose_config):  # noqa: F811
    overrides = [*TINY, f"ckpt_path={CKPT}"]
    with pytest.raises(ConfigError, match=r"not the training state a resume continues from"):
        run_training(compose_config("train", overrides))


@pytest.mark.slow
def test_quantize_compares_with_the_plan(compose_config, tmp_path, monkeypatch):  # noqa: F811
    hparams = _hparams()
    cfg = compose_config("quantize", ENTRY_POINTS["quantize"])
    assert comparison_plan(cfg, hparams) == RECORDED
    cfg = compose_config("quantize", [*ENTRY_POINTS["quantize"], "runtime.compile=true"])
    with pytest.raises(ConfigError, match=r"runtime\.compile=True: the comparison"):
        run_quantize(cfg)
    assert not (tmp_path / "run" / "int8.ckpt").exists()  # refused before writing

    plans = []
    apply = macelab.quantize.apply_runtime
    monkeypatch.setattr(
        macelab.quantize, "apply_runtime", lambda m, plan: plans.append(plan) or apply(m, plan)
    )
    overrides = [*ENTRY_POINTS["quantize"], *TEST_DATA, "runtime.backend=e3nn"]
    overrides += ["runtime.fused_convolution=false", f"out={tmp_path / 'int8.ckpt'}"]
    results = run_quantize(compose_config("quantize", overrides, output_dir=tmp_path / "q"))
    expected = RuntimePlan(backend="sparse_torch", fused_convolution=False, edge_chunk=40)
    assert plans == [expected, expected]  # the float and the INT8 model
    assert len(results) == 4


@pytest.mark.parametrize(
    "override",
    [
        "runtime.backend=sparse_torch",
        "runtime.edge_chunk=9",
        "runtime.precision_policy=policy_safe",
        "runtime.cuda_graphs=true",
        "runtime.compile=true",
    ],
)
def test_export_refuses_what_a_file_cannot_keep(override, compose_config, tmp_path):  # noqa: F811
    out = tmp_path / "model.pt2"
    cfg = compose_config("export", [*ENTRY_POINTS["export"], override, f"out={out}"])
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}=.*; leave {key} at"):
        run_export(cfg)
    assert not out.exists()
