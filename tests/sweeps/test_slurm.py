"""SLURM, tested as far as one machine allows: the launcher preset composes, a multirun
through hydra-submitit-launcher submits a job with one task per device (checked in the sbatch
script a fake ``sbatch`` records, then run by a fake ``srun`` as two real DDP ranks), and
Lightning takes its ranks from SLURM's variables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from macelab.config import CONFIG_DIR
from tests.sweeps import fake_slurm
from tests.sweeps.test_sweep_files import TINY

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]'")


def _launcher(overrides: list[str]) -> dict:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    finally:
        GlobalHydra.instance().clear()


def test_slurm_preset_takes_its_resources_from_the_trainer():
    launcher = _launcher(
        [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.launcher.timeout_min=720",
        ]
    )
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 4, 4)
    assert (launcher["partition"], launcher["timeout_min"]) == ("gpu", 720)
    setup = "\n".join(launcher["setup"])
    for variable in (
        "NCCL_NVLS_ENABLE=0",
        "TORCH_SYMM_MEM_DISABLE_MULTICAST=1",
        "NVSHMEM_DISABLE_NVLS=1",
    ):
        assert f"export {variable}" in setup
    assert f"OMP_NUM_THREADS={launcher['cpus_per_task']}" in setup
    # the single-GPU default trainer gives single-GPU jobs
    single = _launcher(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    assert (single["nodes"], single["gpus_per_node"], single["tasks_per_node"]) == (1, 1, 1)


def test_plugin_default_still_composes():
    plain = _launcher(["hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=2"])
    assert plain["gpus_per_node"] == 2 and plain["partition"] is None


@pytest.mark.slow
def test_multirun_submits_one_task_per_device_and_trains_under_srun(tmp_path):
    bin_dir = fake_slurm.install(tmp_path / "bin")
    record, sweep = tmp_path / "record", tmp_path / "sweep"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SLURM_RECORD": str(record),
        "FAKE_SLURM_TIMEOUT_S": "400",
        "OMP_NUM_THREADS": "1",
        "MACELAB_CACHE": str(tmp_path / "cache"),
    }
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "macelab.train",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=testq",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.cpus_per_task=1",
        "trainer=ddp",
        "trainer.devices=2",
        *TINY,
        "seed=0,1",  # two runs: one job array of two jobs
        f"hydra.sweep.dir={sweep}",
    ]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher, fake srun and both ranks
        output, _ = process.communicate()
        pytest.fail(f"the multirun did not finish:\n{output[-3000:]}")
    logs = "\n".join(p.read_text() for p in sorted(sweep.glob(".submitit/*/*.out")))
    assert process.returncode == 0, output[-3000:] + logs[-3000:]

    (script,) = sorted(record.glob("sbatch_*.sh"))
    text = script.read_text()
    for line in (
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --nodes=1",
        "#SBATCH --partition=testq",
        "#SBATCH --time=30",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=64GB",
        "#SBATCH --array=0-1%2",
        "export NCCL_NVLS_ENABLE=0",
    ):
        assert line in text.splitlines(), line
    srun = [line for line in text.splitlines() if line.startswith("srun ")]
    assert len(srun) == 1 and "-u -m submitit.core._submit" in srun[0]

    # each job: two ranks trained one DDP run with its own seed; rank 0 wrote the run folder
    results = []
    for job in ("0", "1"):  # job folders: <job number>_<its overrides>
        (folder,) = sweep.glob(f"{job}_*")
        info = json.loads((folder / "run_info.json").read_text())
        assert (info["world_size"], info["cluster_environment"]) == (2, "SLURMEnvironment")
        results.append(json.loads((folder / "results.json").read_text())["test_MD_300K"])
        assert results[-1]["num_structures"] > 0
    assert results[0]["forces_rmse_meV_per_A"] != results[1]["forces_rmse_meV_per_A"]
    summary = pd.read_csv(sweep / "summary.csv")
    assert sorted(summary["seed"]) == [0, 1]
    assert summary["status"].tolist() == ["COMPLETED", "COMPLETED"]


SLURM_TASK = {
    "SLURM_JOB_ID": "4243",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "4",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NNODES": "2",
    "SLURM_NODELIST": "gpu[07-08]",
    "SLURM_NODEID": "1",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
}


def test_trainer_config_takes_its_ranks_from_slurm(monkeypatch):
    from lightning.fabric.plugins.environments import SLURMEnvironment

    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in SLURM_TASK.items():
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
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (
        4,
        3,
        1,
        1,
    )
    assert environment.main_address == "gpu07"  # the first node of the allocation
    environment.validate_settings(num_devices=2, num_nodes=2)  # what fit() checks first
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")  # a job whose tasks do not match devices
    with pytest.raises(ValueError, match="ntasks-per-node"):
        environment.validate_settings(num_devices=2, num_nodes=2)
