"""Pieces of the benchmark harness: the operation count, the correctness gate, the tables."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from benchmarks import flops, implementations
from benchmarks.measure import Reference, check
from benchmarks.precisions import PRECISIONS, macelab_precisions, precision
from benchmarks.profiling import kernel_group
from benchmarks.report import main_table, profile_groups_table
from macelab.runtime import RuntimePlan
from tests.training.conftest import compose_run_config


def test_einsum_cost_counts_multiply_and_add() -> None:
    assert flops._einsum_cost("ij,jk->ik", [(2, 3), (3, 4)]) == 2 * 2 * 3 * 4


def test_linear_count_is_twice_the_weights_times_the_irrep_dimension() -> None:
    from e3nn import o3

    linear = o3.Linear("4x0e + 2x1o", "3x0e + 5x1o")
    per_node, values, weights = flops._linear(linear)
    assert per_node == 2 * (4 * 3 * 1 + 2 * 5 * 3)
    assert weights == linear.weight_numel == 4 * 3 + 2 * 5
    assert values == linear.irreps_in.dim + linear.irreps_out.dim


def test_channelwise_tensor_product_count() -> None:
    from e3nn import o3

    tp = o3.TensorProduct(
        "2x0e",
        "1x0e + 1x1o",
        "2x0e + 2x1o",
        [(0, 0, 0, "uvu", True), (0, 1, 1, "uvu", True)],
        shared_weights=False,
        internal_weights=False,
    )
    per_edge, values, shared = flops._tensor_product(tp)
    # path (0,0->0): 2 * (1 + 2*1 + 1); path (0,1->1): 2 * (3 + 2*9 + 3)
    assert per_edge == 2 * 4 + 2 * 24
    assert shared == 0 and values == 2 + 4 + 8 + tp.weight_numel


@pytest.mark.mace_torch
def test_forward_count_matches_counted_matrix_work() -> None:
    """The analytic forward count is within a factor 2 of torch's count of matrix FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.implementations import ModelStatistics, build_reference_mace, mace_inputs
    from benchmarks.settings import TINY
    from benchmarks.systems import make_batch, synthetic_molecule

    stats = ModelStatistics({1: -13.0, 6: -1000.0, 7: -1400.0, 8: -2000.0}, 10.0, 1.0, 0.0, "")
    model = build_reference_mace(TINY.model, stats)
    batch = make_batch([synthetic_molecule(27, seed=k) for k in range(3)], TINY.model.r_max)
    count = flops.forward_count(model, batch.num_nodes, batch.edge_index.shape[1])
    with FlopCounterMode(display=False) as counter:
        model(mace_inputs(batch, TINY.model.atomic_numbers, torch.float64), compute_force=False)
    ratio = count.total_flops / counter.get_total_flops()
    assert 0.5 < ratio < 2.0, ratio
    assert all(count.flops[op] > 0 for op in flops.OPERATIONS)


def _reference() -> Reference:
    forces = torch.randn(6, 3, dtype=torch.float64)
    f64 = torch.float64
    energy, e0_sum = (
        torch.tensor([-100.0, -80.0], dtype=f64),
        torch.tensor([-90.0, -70.0], dtype=f64),
    )
    return Reference(energy, forces, e0_sum, "ref")


def test_gate_passes_rounding_and_refuses_errors_and_nan() -> None:
    ref = _reference()
    path = type("P", (), {"spec": precision("32")})()
    ok = check(path, ref.energy + 1e-7, ref.forces * (1 + 1e-6), ref, "x")
    assert ok["passed"] and ok["forces_rel_err"] == pytest.approx(1e-6, rel=1e-3)
    # energies are compared without the E0 sum: 0.01 eV on a 10 eV interaction energy
    off = check(path, ref.energy + 0.01, ref.forces, ref, "x")
    assert not off["passed"] and off["energy_rel_err"] == pytest.approx(1e-3)
    nan = check(path, ref.energy, ref.forces * math.nan, ref, "x")
    assert not nan["passed"]


def test_refused_paths_show_no_speed() -> None:
    record = {
        "workload": "train_step",
        "implementation": "macelab",
        "precision": "bf16-mixed",
        "system": {"label": "3BPA x5"},
        "refused": "errors exceed the bound",
        "skipped": None,
        "speed": None,
        "setup_s": 1.0,
        "correctness": {"energy_rel_err": 0.2, "forces_rel_err": 0.3},
    }
    row = main_table([record])[-1]
    assert "REFUSED" in row and "ms" not in row


def test_every_macelab_precision_has_a_bound() -> None:
    described, unknown = macelab_precisions()
    assert not unknown, f"add {unknown} to PRECISIONS in benchmarks/precisions.py"
    assert [p.name for p in described] == [p.name for p in PRECISIONS]
    assert all(0 < p.bound < 0.1 for p in PRECISIONS)


def test_kernel_names_fall_into_their_groups() -> None:
    assert kernel_group("conv_recv") == "fused conv"
    assert kernel_group("conv_edge") == "fused conv"
    assert kernel_group("contraction_backward_kernel") == "triton contraction"
    for name in ("rows_kernel", "components_kernel", "terms_kernel"):
        assert kernel_group(name) == "triton contraction"
    assert kernel_group("sm80_xmma_gemm_f32f32_f32f32_f32_tn_n") == "matmul"
    assert kernel_group("void gemv2N_kernel<int, int, float>") == "matmul"
    assert kernel_group("triton_poi_fused_mul_0") == "inductor"
    assert kernel_group("void at::native::vectorized_elementwise_kernel<4>") == "elementwise"
    assert kernel_group("void at::native::reduce_kernel<512, 1>") == "reduce, index, scatter"
    assert kernel_group("void at::native::indexFuncLargeIndex<float>") == "reduce, index, scatter"
    assert kernel_group("some_library_kernel") == "other"


def test_group_table_shows_each_groups_share() -> None:
    record = {
        "workload": "profile_train",
        "implementation": "macelab+conv",
        "precision": "32",
        "profile": {"kernel_groups_ms": {"fused conv": 3.0, "matmul": 1.0}},
    }
    header, _, row = profile_groups_table([record])
    assert "fused conv" in header and "other" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["profile_train", "macelab+conv/32", "4", "3 (75%)"]
    assert "1 (25%)" in cells and cells[-1] == "-"


@pytest.mark.parametrize("name", sorted(implementations.PLANS))
def test_every_macelab_path_is_a_runtime_plan(name: str, tmp_path: Path) -> None:
    """A path's label stands for a runtime plan: the overrides it prints compose, through
    conf/runtime, into the same plan a training run would use."""
    plan = implementations.PLANS[name]
    overrides = implementations.runtime_overrides(plan).split()
    cfg = compose_run_config("train", overrides, tmp_path)
    assert RuntimePlan.from_mapping(cfg.runtime) == plan
    assert (name in implementations.COMPILED) == plan.compile
    assert (name in implementations.GRAPHED) == (plan.cuda_graphs and not plan.compile)
    assert ("+conv" in name or "triton" in name) == plan.fuses_convolution


def test_the_docs_list_every_path_with_its_plan() -> None:
    """docs/benchmarks.md's table of paths is the code's PLANS, row for row."""
    text = (Path(__file__).parents[2] / "docs" / "benchmarks.md").read_text()
    rows = re.findall(r"^\s*\| `(macelab[^`]*)` \| (.*) \|$", text, flags=re.MULTILINE)
    documented = {name: cell.strip("`") for name, cell in rows}
    expected = {
        name: implementations.runtime_overrides(plan) or "(none: the reference)"
        for name, plan in implementations.PLANS.items()
    }
    assert documented == expected
