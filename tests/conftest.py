"""Shared fixtures: where the benchmark data is, and double precision for model tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The heavy tier: tests that take about half a minute or more each on CI's two cores (from
# the --durations of the clean-clone CI run at f5df53a, 2026-12-07). `make test` leaves them
# out (-m "not heavy", about 10 minutes on two cores); `make test-all`, which CI runs, keeps
# them. Node ids, or a module path for every test of a module (module fixtures included).
HEAVY = (
    "tests/docs/test_commands.py::test_the_commands_of_each_file_run[docs/use.md]",
    "tests/docs/test_commands.py::test_the_commands_of_each_file_run[README.md]",
    "tests/docs/test_commands.py::test_the_commands_of_each_file_run[docs/training.md]",
    "tests/kernels/test_mace_backends.py::test_backends_give_the_same_mace[triton]",
    "tests/kernels/test_triton_conv.py::test_fused_sum_and_derivatives_match_e3nn_fp64[20-2-3]",
    "tests/kernels/test_triton_conv.py::test_fused_convolution_under_policy_safe",
    "tests/kernels/test_triton_conv.py::test_gradcheck_and_gradgradcheck",
    "tests/benchmarks/test_harness_smoke.py",
    "tests/benchmarks/test_export_pt2.py::test_export_pt2_benchmark_runs_on_cpu",
    "tests/benchmarks/test_embedding_ablation.py::test_tiny_ablation_full_and_rank_2",
    "tests/benchmarks/test_progressive_ablation.py::test_tiny_ablation_runs_both_variants",
    "tests/speed/test_compiled_triton_contraction.py::"
    "test_compiled_train_step_runs_the_triton_contraction",
    "tests/speed/test_compiled_fused_conv.py",
    "tests/speed/test_padding_and_graphs.py::"
    "test_compiled_potential_traces_forces_and_stress_exactly",
    "tests/benchmarks/test_triton_contraction.py::"
    "test_triton_contraction_benchmark_runs_on_cpu[True]",
    "tests/speed/test_compiled_train.py::"
    "test_compiled_train_step_matches_eager_and_follows_the_weights",
    "tests/sweeps/test_ddp_resume.py",
    "tests/sweeps/test_ddp_evaluate.py",
    "tests/sweeps/test_slurm.py::test_multirun_submits_one_task_per_device_and_trains_under_srun",
    "tests/training/test_kill_resume.py",
    "tests/use/test_aoti.py",
    "tests/use/test_export.py",
    "tests/use/test_model_artifacts.py::test_committed_model_reproduces_its_recorded_errors",
    "tests/analysis/test_notebooks.py::test_experiments_notebook_with_an_embedding_ablation",
)


def _matches(nodeid: str, entry: str) -> bool:
    return nodeid == entry or nodeid.startswith((entry + "::", entry + "["))


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the HEAVY tests ``heavy``; refuse an entry that names no test of a collected
    module (a renamed test would otherwise move to the fast tier unnoticed)."""
    for item in items:
        if any(_matches(item.nodeid, entry) for entry in HEAVY):
            item.add_marker(pytest.mark.heavy)
    files = {item.nodeid.split("::")[0] for item in items}
    stale = [
        entry
        for entry in HEAVY
        if entry.split("::")[0] in files and not any(_matches(i.nodeid, entry) for i in items)
    ]
    if stale:
        raise pytest.UsageError(f"tests/conftest.py HEAVY names no collected test: {stale}")


def _shared_data_root() -> Path | None:
    root = os.environ.get("MACELAB_DATA")
    if root and Path(root).is_dir():
        return Path(root)
    return None


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The shared benchmark data (``$MACELAB_DATA``), or skip with how to provide it."""
    root = _shared_data_root()
    if root is None:
        pytest.skip(
            "needs the benchmark data: set MACELAB_DATA to a folder holding dataset_3BPA/, "
            "dataset_acac/ and dataset_ethanol/ as in the BOTNet-datasets repository "
            "(https://github.com/davkovacs/BOTNet-datasets, MIT licence; make test sets it "
            "when ../shared/data exists)"
        )
    return root


@pytest.fixture(autouse=True)
def _restore_lightning_rank():
    """Put Lightning's process-wide rank back after each test.

    Building a DDP trainer (even one that starts no process, as the SLURM and torchrun
    configuration tests do) sets ``rank_zero_only.rank`` from the cluster environment; a
    later training test in the same pytest worker would then believe it is rank 3 and
    write no logs or ``metrics.csv``.
    """
    from lightning_utilities.core.rank_zero import rank_zero_only

    saved = getattr(rank_zero_only, "rank", 0)
    yield
    rank_zero_only.rank = saved
