"""The runtime plan (``conf/runtime``, :mod:`macelab.runtime`): one declared plan of how a
model computes, applied by swapping classes (no ``forward`` assigned), and the old keys
(``model.backend``, ``model.fused_convolution``, ``model.edge_chunk``,
``training.cuda_graphs``, ``training.compile_step``) still read, in configs and checkpoints.

``tests/fixtures/legacy_runtime_keys.ckpt`` was written by the code before the runtime plan
(commit d4bc2b2, ``python -m macelab.train`` with ``model.backend=sparse_torch
model.edge_chunk=40``, a tiny float32 model, optimiser state stripped);
``legacy_runtime_keys.json`` holds what that code predicted from it for acetone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from ase.build import molecule
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from macelab.config import CONFIG_DIR
from macelab.errors import ConfigError
from macelab.kernels import get_backend
from macelab.kernels.backend import SparseTorchSymmetricContraction
from macelab.model import build_model
from macelab.model.stages import implementation, stage_precision
from macelab.model.symmetric_contraction import SymmetricContraction
from macelab.precision import load_precision, policy_of
from macelab.precision.policy import PolicyStage, apply_policy, remove_policy
from macelab.runtime import (
    LEGACY_KEYS,
    RuntimePlan,
    apply_runtime,
    build_for_run,
    plan_from_config,
    without_legacy_keys,
)
from macelab.training.checkpoint import load_model, read_checkpoint
from tests.model.helpers import TINY_CONFIG, batch

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY_CKPT = FIXTURES / "legacy_runtime_keys.ckpt"


def _contraction_backends(model: torch.nn.Module) -> set[str]:
    return {get_backend(m) for m in model.modules() if isinstance(m, SymmetricContraction)}


def test_old_checkpoint_loads_with_its_plan_and_identical_outputs():
    hparams = read_checkpoint(LEGACY_CKPT)["hyper_parameters"]
    assert "runtime" not in hparams and hparams["model"]["backend"] == "sparse_torch"
    model, _ = load_model(LEGACY_CKPT)
    assert _contraction_backends(model) == {"sparse_torch"}
    assert [m.edge_chunk for m in model.interactions] == [40] * len(model.interactions)
    stored = {
        k.removeprefix("model.")
        for k in read_checkpoint(LEGACY_CKPT)["state_dict"]
        if k.startswith("model.")
    }
    assert set(model.state_dict()) == stored
    expected = json.loads((FIXTURES / "legacy_runtime_keys.json").read_text())
    graphs = batch([molecule("CH3COCH3")], r_max=float(hparams["model"]["r_max"]))
    out = model(graphs, compute_forces=True)
    expected_energy = torch.tensor(expected["energy"], dtype=out["energy"].dtype)
    expected_forces = torch.tensor(expected["forces"], dtype=out["forces"].dtype)
    torch.testing.assert_close(out["energy"].detach(), expected_energy, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["forces"].detach(), expected_forces, rtol=1e-6, atol=1e-7)


def test_every_old_key_maps_onto_the_plan():
    values = {
        "backend": "sparse_torch",
        "fused_convolution": False,
        "edge_chunk": 7,
        "cuda_graphs": True,
        "compile": True,
    }
    for (section, key), field in LEGACY_KEYS.items():
        plan = plan_from_config(None, **{section: {key: values[field]}})
        assert getattr(plan, field) == values[field], (section, key)
    # null and default values of the old keys leave the runtime group alone
    plan = plan_from_config({"backend": "sparse_torch"}, {"backend": None}, {"cuda_graphs": False})
    assert plan == RuntimePlan(backend="sparse_torch")
    with pytest.raises(ConfigError, match=r"model\.backend='cueq'.*runtime\.backend"):
        plan_from_config({"backend": "sparse_torch"}, {"backend": "cueq"})
    with pytest.raises(ConfigError, match="unknown runtime key"):
        RuntimePlan.from_mapping({"backnd": "e3nn"})
    assert without_legacy_keys({"channels": 8, "backend": "e3nn", "edge_chunk": 3}) == {
        "channels": 8
    }


def test_conf_runtime_is_the_plan():
    default = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "runtime/default.yaml"))
    assert RuntimePlan.from_mapping(default) == RuntimePlan()
    assert set(default) == {f.name for f in dataclasses.fields(RuntimePlan)}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], RuntimePlan()),
        (["runtime.backend=sparse_torch", "runtime.edge_chunk=9"], None),
        (["model.backend=sparse_torch", "model.edge_chunk=9"], None),  # the old names
        (["training.cuda_graphs=true", "training.compile_step=true"], "steps"),
    ],
)
def test_train_config_composes_a_plan(overrides, expected):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    plan = plan_from_config(cfg.runtime, cfg.model, cfg.training)
    if expected is None:
        expected = RuntimePlan(backend="sparse_torch", edge_chunk=9)
    elif expected == "steps":
        expected = RuntimePlan(cuda_graphs=True, compile=True)
    assert plan == expected


def test_apply_runtime_swaps_classes_and_keeps_the_state():
    torch.manual_seed(0)
    reference = build_model(TINY_CONFIG)
    keys = list(reference.state_dict())
    torch.manual_seed(0)
    model = apply_runtime(build_model(TINY_CONFIG), RuntimePlan(backend="sparse_torch"))
    assert list(model.state_dict()) == keys
    contraction = model.products[0].contraction
    assert type(contraction) is SparseTorchSymmetricContraction
    assert "forward" not in contraction.__dict__
    graphs = batch([molecule("CH3CH2OH")])
    torch.testing.assert_close(
        model(graphs, compute_forces=True)["forces"],
        reference(graphs, compute_forces=True)["forces"],
        rtol=1e-4,
        atol=1e-5,
    )
    apply_runtime(model, RuntimePlan())
    assert type(contraction) is SymmetricContraction


def test_policy_and_backend_in_either_order():
    """A precision policy is a layer over a stage's class; changing the implementation
    under it keeps it, and removing it keeps the implementation."""
    policy = policy_of(load_precision("policy_safe"))
    model = build_model(TINY_CONFIG)
    apply_policy(model, policy)
    contraction = model.products[0].contraction
    precision = stage_precision(contraction)
    assert precision is not None and isinstance(contraction, PolicyStage)
    apply_runtime(model, RuntimePlan(backend="sparse_torch"))
    assert implementation(contraction) is SparseTorchSymmetricContraction
    assert stage_precision(contraction) == precision and isinstance(contraction, PolicyStage)
    remove_policy(model)
    assert type(contraction) is SparseTorchSymmetricContraction
    assert stage_precision(contraction) is None


def test_build_for_run_reads_the_old_model_keys():
    model = build_for_run({**TINY_CONFIG, "backend": "sparse_torch", "edge_chunk": 5})
    assert _contraction_backends(model) == {"sparse_torch"}
    assert {m.edge_chunk for m in model.interactions} == {5}
    assert _contraction_backends(build_model({**TINY_CONFIG, "backend": "sparse_torch"})) == {
        "e3nn"
    }  # the model alone is the reference: how it computes is the plan's


def test_calculator_takes_a_runtime_plan():
    from macelab.calculator import MACECalculator

    model = build_model(TINY_CONFIG)
    calculator = MACECalculator(model, runtime={"backend": "sparse_torch", "edge_chunk": 30})
    assert _contraction_backends(calculator.model) == {"sparse_torch"}
    assert {m.edge_chunk for m in calculator.model.interactions} == {30}
    assert calculator.accelerate is None
    assert _contraction_backends(model) == {"e3nn"}  # the calculator's copy only
