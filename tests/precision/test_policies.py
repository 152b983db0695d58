"""Precision policies: parsing and validation, stage dtypes, constants kept in fp32,
equivariance per precision within stated bounds, fp16 loss scaling, training and
evaluation end to end with every precision name, and the report."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from macelab.errors import ConfigError
from macelab.precision import load_precision, policy_names, policy_of, precision_names
from macelab.precision.inference import for_inference
from macelab.precision.policy import Policy
from macelab.precision_report import measure, random_model
from tests.model.helpers import batch, silicon_cell
from tests.training.conftest import TINY, compose_config  # noqa: F401 (fixture)

POLICIES = ["policy_safe", "policy_aggressive", "policy_layerwise", "policy_layerwise_reverse"]

# Stated bounds on the relative force equivariance error (max over structures and O(3)
# transforms, tiny random model): float64 at rounding level, float32 below 1e-5; a bf16
# stage rounds to 8 significant bits (4e-3 relative per operation), fp16 to 11 bits.
BOUNDS = {"64": 1e-12, "32": 1e-5, "tf32": 1e-5, "16-mixed": 0.05, "bf16-mixed": 0.5}
LOW_BOUND = 0.5  # every policy


@pytest.fixture(scope="module")
def model():
    return random_model("tiny", correlation=2)


def test_shipped_policies_are_listed():
    assert set(POLICIES) <= set(policy_names())
    assert precision_names()[:5] == ["64", "32", "tf32", "16-mixed", "bf16-mixed"]


def test_policy_safe_gives_each_stage_its_dtype(model):
    runner, context = for_inference(model, "policy_safe")
    seen: dict[str, torch.dtype] = {}
    for name in (
        "edges",
        "spherical_harmonics",
        "interactions.0.tensor_product",
        "interactions.0.aggregation",
        "products.1.contraction",
        "energy_sum",
    ):
        module = runner.get_submodule(name)
        module.register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(
                name, (o[0] if isinstance(o, tuple) else o).dtype
            )
        )
    with context():
        runner(batch([silicon_cell(0)]), compute_forces=True)
    assert seen["edges"] == torch.float32
    assert seen["spherical_harmonics"] == torch.float32
    assert seen["interactions.0.tensor_product"] == torch.bfloat16
    assert seen["interactions.0.aggregation"] == torch.bfloat16  # summed in fp32, cast back
    assert seen["products.1.contraction"] == torch.bfloat16
    assert seen["energy_sum"] == torch.float32


@pytest.mark.parametrize("name", POLICIES)
def test_constants_and_weights_stay_fp32(model, name):
    """Weights and constants keep fp32 (the E0 table float64: totals of thousands of eV)."""
    runner, context = for_inference(model, name)
    with context():
        output = runner(batch([silicon_cell(0)]), compute_forces=True)
    assert output["energy"].dtype == torch.float64
    for key, value in runner.state_dict().items():
        if value.is_floating_point():
            expected = torch.float64 if key.endswith("atomic_energies") else torch.float32
            assert value.dtype == expected, key
    contraction = runner.get_submodule("products.0.contraction")
    assert any(b.dtype == torch.float32 for b in contraction.buffers())  # the CG/U constants


def test_most_specific_pattern_wins(model):
    policy = Policy.from_config(
        "p",
        {
            "default": "fp32",
            "stages": {
                "interactions.*": "bf16",
                "interactions.0.*": "fp16",
                "interactions.0.linear": "fp64",
            },
        },
    )
    resolved = policy.resolve(model)
    assert resolved["interactions.1.linear_up"].compute == torch.bfloat16
    assert resolved["interactions.0.linear_up"].compute == torch.float16
    assert resolved["interactions.0.linear"].compute == torch.float64
    assert resolved["edges"].compute == torch.float32


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"stages": {"interactons.*.tensor_product": "bf16"}}, "interactons"),
        ({"stages": {"edges": "bf15"}}, "bf15"),
        ({"stages": {"edges": {"compute": "fp32", "accumulate": "fp32"}}}, "accumulate"),
        ({"default": "fp32", "layers": {}}, "layers"),
    ],
)
def test_bad_policies_are_refused_naming_the_key(model, config, message):
    with pytest.raises(ConfigError, match=message):
        Policy.from_config("mine", config).resolve(model)


@pytest.mark.slow
def test_equivariance_within_bounds_for_every_precision(model):
    results = measure(model, precision_names(), transforms=2, count=1, device="cpu")
    for name, values in results.items():
        bound = BOUNDS.get(name, LOW_BOUND)
        assert values["forces_equivariance_max"] < bound, (name, values)
        assert math.isfinite(values["forces_rmse_meV_per_A_max"])
    assert results["64"]["forces_rmse_meV_per_A_max"] < 1e-9
    assert results["32"]["interaction_energy_error_meV_per_atom_max"] < 1e-2
    # fp32 geometry and sums: the safe policy is more accurate than bf16 everywhere
    assert (
        results["policy_safe"]["forces_rmse_meV_per_A_max"]
        < results["policy_aggressive"]["forces_rmse_meV_per_A_max"]
    )


def test_fp16_loss_scaling_skips_and_counts_nonfinite_steps():
    from macelab.precision.plugin import PolicyPrecision

    plugin = PolicyPrecision(policy_of(load_precision("policy_safe_fp16")), "cpu")
    assert plugin.scaler is not None
    plugin._after_closure = lambda *args: None  # Lightning's hooks need a Trainer
    layer = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    model = SimpleNamespace(automatic_optimization=True)

    def closure(poison: bool):
        optimizer.zero_grad()
        loss = plugin.scaler.scale(layer(torch.ones(1, 2)).sum())
        loss.backward()
        if poison:
            layer.weight.grad[0, 0] = float("inf")
        return loss

    before = layer.weight.detach().clone()
    plugin.optimizer_step(optimizer, model, lambda: closure(True))
    assert torch.equal(layer.weight, before) and plugin.skipped_steps == 1
    plugin.optimizer_step(optimizer, model, lambda: closure(False))
    assert not torch.equal(layer.weight, before) and plugin.skipped_steps == 1


# Training precision -> the precision its checkpoint is evaluated in (default: the same);
# an fp64 checkpoint under a policy checks that the plugin casts to fp32 master weights.
EVALUATE_WITH = {"64": "policy_safe", "32": "bf16-mixed"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [*POLICIES, "policy_safe_fp16", "64", "32", "tf32", "16-mixed", "bf16-mixed"]
)
def test_every_precision_trains_and_evaluates(compose_config, tmp_path, name):  # noqa: F811
    from macelab.evaluate import run_evaluation
    from macelab.train import run_training

    overrides = [o for o in TINY if not o.startswith("precision=")]
    overrides += [f"precision='{name}'", "trainer.max_epochs=1", "trainer.limit_train_batches=3"]
    cfg = compose_config("train", overrides)
    run_training(cfg)
    run_dir = tmp_path / "run"
    trained = json.loads((run_dir / "results.json").read_text())
    evaluate_with = EVALUATE_WITH.get(name, name)
    eval_cfg = compose_config(
        "evaluate",
        [
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"precision='{evaluate_with}'",
            "limit_test_batches=1",
            "plots=false",
            "accelerator=cpu",
        ],
        output_dir=tmp_path / "eval",
    )
    evaluated = run_evaluation(eval_cfg)
    for results in (trained, evaluated):
        assert results
        for metrics in results.values():
            for key, value in metrics.items():
                if key.endswith("_meV") or key.endswith("_per_A"):
                    assert math.isfinite(value), (name, key)


def test_nonfinite_policy_energy_is_a_clear_error(model):
    from macelab.precision.policy import NonFiniteEnergyError

    runner, context = for_inference(model, "policy_safe_fp16")
    with torch.no_grad():
        for parameter in runner.get_submodule("readouts.1").parameters():
            parameter.mul_(1e4)  # the fp16 readout overflows (fp16 ends at 65504)
    with pytest.raises(NonFiniteEnergyError, match="policy_safe_fp16"), context():
        runner(batch([silicon_cell(0)]), compute_forces=True)


def test_calculator_accepts_every_name(model):
    from macelab.calculator import MACECalculator

    atoms = silicon_cell(0)
    reference = None
    for name in precision_names():
        atoms.calc = MACECalculator(model, precision=name)
        energy = atoms.get_potential_energy()
        assert math.isfinite(energy) and atoms.get_forces().shape == (len(atoms), 3)
        reference = energy if reference is None else reference
        assert abs(energy - reference) < 1e-3 * len(atoms), name  # within 1 meV/atom of fp64


@pytest.mark.slow
def test_report_writes_its_files(tmp_path):
    from macelab.precision_report import main

    out = tmp_path / "report"
    argv = [
        "--out",
        str(out),
        "--size",
        "tiny",
        "--correlation",
        "2",
        "--structures",
        "1",
        "--transforms",
        "1",
        "--precisions",
        "64,32,policy_safe",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    report = json.loads((out / "precision_report.json").read_text())
    assert set(report["results"]) == {"64", "32", "policy_safe"}
    assert "random weights" in report["weights"]
    assert (out / "precision_report.png").stat().st_size > 10_000
    assert "policy_safe" in (out / "precision_report.md").read_text()


@pytest.mark.slow
def test_budget_benchmark_trains_and_tabulates(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "budget"
    command = [
        sys.executable,
        "benchmarks/studies/precision_budget.py",
        "--tiny",
        "--device",
        "cpu",
    ]
    command += ["--budget-s", "2", "--out", str(out), "--precisions", "policy_safe,nope"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    record = json.loads((out / "precision_budget.json").read_text())
    safe, unknown = record["runs"]
    assert safe["steps"] > 0 and math.isfinite(safe["best_val_forces_rmse_meV_per_A"])
    assert math.isfinite(safe["test"]["test_MD_300K"]["forces_rmse_meV_per_A"])
    assert "precision/nope" in unknown["error"]  # Hydra's message, and the others still run
    table = (out / "precision_budget.md").read_text()
    assert "| policy_safe |" in table and "| nope |" in table
