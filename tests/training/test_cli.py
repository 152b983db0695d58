"""The command line: the design card's command runs, and user errors exit cleanly.

A user error prints one paragraph naming what is wrong and what to do, exits with status 2
and shows no Python traceback; non-finite losses stop the run naming the step.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from macelab.training.module import NonFiniteLossError
from tests.cli import cli_env
from tests.training.helpers import synthetic_batch, tiny_module

pytestmark = pytest.mark.slow


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = cli_env(MACELAB_CACHE=str(tmp_path / "cache"))
    return subprocess.run(
        [sys.executable, "-m", "macelab.train", *args, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_design_card_command_runs_on_cpu(tmp_path):
    """`python -m macelab.train model=mace precision=bf16-mixed` (one batch of each split)."""
    result = _run(
        ["model=mace", "precision=bf16-mixed", "debug=fdr", "trainer.accelerator=cpu"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_precision_64_is_accepted_on_the_command_line(tmp_path):
    result = _run(["precision=64", "model/size=tiny", "debug=fdr"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_missing_training_file_is_one_paragraph_and_exit_2(tmp_path):
    missing = tmp_path / "nope.xyz"
    result = _run(["data=xyz", f"data.train_file={missing}", "model/size=tiny"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert str(missing) in result.stderr


def test_corrupted_xyz_names_file_and_record(tmp_path):
    broken = tmp_path / "broken.xyz"
    broken.write_text(
        '2\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-1.0 pbc="F F F"\n'
        "H 0 0 0 0 0 0\nH 0 0 0.74 0 0 0\n"
        '2\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-1.0 pbc="F F F"\n'
        "H 0 0 0 0 0 0\n"  # truncated: the second atom is missing
    )
    result = _run(["data=xyz", f"data.train_file={broken}", "model/size=tiny"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(broken) in result.stderr


def test_unknown_config_group_option_fails_with_hydras_message(tmp_path):
    result = _run(["model/size=gigantic"], tmp_path)
    assert result.returncode != 0
    assert "gigantic" in result.stderr


def _batch_with_nan_label():
    from macelab.data.graph import AtomicGraph

    batch = synthetic_batch([3])
    graph = AtomicGraph(
        num_nodes=3,
        positions=torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 1.1, 0]], dtype=torch.float64),
        atomic_numbers=torch.tensor([6, 1, 1]),
        edge_index=torch.tensor([[0, 1, 0, 2, 1, 2], [1, 0, 2, 0, 2, 1]]),
        unit_shifts=torch.zeros(6, 3, dtype=torch.float64),
        cell=torch.zeros(1, 3, 3, dtype=torch.float64),
        pbc=torch.zeros(1, 3, dtype=torch.bool),
        energy=torch.tensor([float("nan")], dtype=torch.float64),
        forces=batch.forces,
        stress=torch.zeros(1, 3, 3, dtype=torch.float64),
        has_energy=torch.tensor([True]),
        has_forces=torch.tensor([True]),
        has_stress=torch.tensor([False]),
        weight=torch.ones(1, dtype=torch.float64),
        index=torch.tensor([7]),
    )
    from torch_geometric.data import Batch

    return Batch.from_data_list([graph])


def test_non_finite_loss_stops_naming_the_step_and_records():
    """A NaN label is the data's fault: the error names the record, not the learning rate
    (a NaN from the optimiser: tests/training/test_non_finite.py)."""
    module = tiny_module([1, 6], [-1.0, -2.0], "stop")
    with pytest.raises(NonFiniteLossError, match=r"record 7, field 'energy'.*global step 0"):
        module.training_step(_batch_with_nan_label(), 0)


def test_non_finite_loss_can_be_skipped_and_counted():
    module = tiny_module([1, 6], [-1.0, -2.0], "skip")
    assert module.training_step(_batch_with_nan_label(), 0) is None
    assert module.skipped_steps == 1


def test_no_checkpoint_is_written_from_non_finite_weights():
    module = tiny_module([1, 6], [-1.0, -2.0], "stop")
    with torch.no_grad():
        next(module.model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="refusing to write a checkpoint"):
        module.on_save_checkpoint({"state_dict": {}})


@pytest.mark.parametrize("flag", ["runtime.compile=true", "training.compile_step=true"])
def test_compiled_step_without_a_gpu_is_a_clear_error(tmp_path, flag):
    """runtime.compile=true (or its old name) on the CPU: one paragraph saying what to
    change, naming the runtime key, exit 2 (the refusal of autocast precisions is tested on
    the step itself, tests/speed)."""
    result = _run([flag, "model/size=tiny", "debug=fdr", "trainer.accelerator=cpu"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "runtime.compile=false" in result.stderr
    assert "training.compile_step=false" not in result.stderr


@pytest.mark.parametrize("flag", ["runtime.cuda_graphs=true", "training.cuda_graphs=true"])
def test_cuda_graphs_without_a_gpu_is_a_clear_error(tmp_path, flag):
    """runtime.cuda_graphs=true (or its old name) on the CPU: one paragraph saying what to
    change, naming the runtime key, exit 2."""
    result = _run([flag, "model/size=tiny", "debug=fdr", "trainer.accelerator=cpu"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "runtime.cuda_graphs=false" in result.stderr


def test_cuda_graphs_with_edge_chunks_is_a_clear_error(tmp_path):
    """Chunked message passing reads its chunk boundaries on the host: refused with CUDA
    graphs (or a compiled step) in one paragraph, exit 2."""
    result = _run(
        [
            "runtime.cuda_graphs=true",
            "runtime.edge_chunk=100",
            "model/size=tiny",
            "debug=fdr",
            "trainer.accelerator=cpu",
        ],
        tmp_path,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "runtime.edge_chunk=null" in result.stderr
