"""Metrics under DDP: two gloo processes, each with its shard of an odd-sized set, give the
same numbers and counts as one process over the whole set."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from macelab.data.samplers import EvalSampler
from macelab.training.metrics import EnergyForceMetrics
from tests.training.helpers import synthetic_batch, synthetic_output

NUM_STRUCTURES = 7  # not divisible by the world size


def _batches():
    return [synthetic_batch([3 + i % 3], seed=i, has_forces=[i != 4]) for i in range(7)]


def _evaluate(indices: list[int]) -> dict:
    metric = EnergyForceMetrics()
    batches = _batches()
    for i in indices:
        metric.update(synthetic_output(batches[i], seed=100 + i), batches[i])
    return metric


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        indices = list(EvalSampler(NUM_STRUCTURES, rank=rank, world_size=world_size))
        result = _evaluate(indices).compute()  # torchmetrics sums the states over ranks
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_metrics_equal_single_process(tmp_path):
    out = tmp_path / "rank0.json"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    distributed = json.loads(out.read_text())
    single = _evaluate(list(range(NUM_STRUCTURES))).compute()
    assert distributed["num_structures"] == single["num_structures"] == NUM_STRUCTURES
    assert distributed["num_force_components"] == single["num_force_components"]
    for key, value in single.items():
        assert distributed[key] == pytest.approx(value, rel=1e-12), key
    assert torch.distributed.is_available()
