"""`trainer=ddp` on two CPU processes (gloo) from the command line: one run folder, results
written once, and DDP without the unused-parameter search (it would fail if any parameter
went without a gradient in a step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.sweeps.test_sweep_files import TINY

pytestmark = pytest.mark.slow


def test_two_process_ddp_run_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MACELAB_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "macelab.train",
            "trainer=ddp",
            "trainer.devices=2",
            *TINY,
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    assert results["test_MD_300K"]["num_structures"] > 0
    assert info["world_size"] == 2  # the global batch and lr scaling are recorded
    assert len(list(tmp_path.glob("run*"))) == 1  # one run folder for both ranks
