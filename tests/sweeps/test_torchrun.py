"""torchrun starts the ranks, Lightning's TorchElasticEnvironment takes them over (it must
not start ranks of its own): the command shape of docs/scaling.md, on one node, 2 CPU
processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from macelab.config import CONFIG_DIR
from tests.sweeps.test_sweep_files import TINY

TORCHRUN_TASK = {  # what torchrun sets in rank 3 of --nnodes=2 --nproc-per-node=2
    "TORCHELASTIC_RUN_ID": "macelab-test",
    "RANK": "3",
    "LOCAL_RANK": "1",
    "GROUP_RANK": "1",
    "WORLD_SIZE": "4",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "node0",
    "MASTER_PORT": "29500",
}


def test_trainer_config_takes_its_ranks_from_torchrun(monkeypatch):
    from lightning.fabric.plugins.environments import TorchElasticEnvironment

    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in TORCHRUN_TASK.items():
        monkeypatch.setenv(name, value)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "trainer=ddp",
                "trainer.accelerator=cpu",
                "trainer.devices=2",
                "trainer.num_nodes=2",
                "trainer.default_root_dir=.",
            ],
        )
    GlobalHydra.instance().clear()
    trainer = instantiate(cfg.trainer, logger=False)  # builds; starts no process
    assert isinstance(trainer.strategy.cluster_environment, TorchElasticEnvironment)
    ranks = (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank)
    assert ranks == (4, 3, 1, 1)


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MACELAB_CACHE": str(tmp_path / "cache")}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",  # = torchrun
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "macelab.train",
        "trainer=ddp",
        "trainer.devices=2",
        *TINY,
        f"hydra.run.dir={run}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((run / "run_info.json").read_text())
    assert (info["world_size"], info["cluster_environment"]) == (2, "TorchElasticEnvironment")
    results = json.loads((run / "results.json").read_text())
    assert results["test_MD_300K"]["num_structures"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"]
