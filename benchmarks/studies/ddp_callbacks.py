"""Callbacks used by the DDP scaling benchmark (added with `+callbacks.<name>._target_=...`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class PeakMemory(Callback):
    """Write this rank's peak GPU memory (MiB) to ``<path>/peak_memory_rank<r>.json``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_end(self, trainer, pl_module) -> None:
        peak = (
            torch.cuda.max_memory_allocated(pl_module.device) / 2**20
            if pl_module.device.type == "cuda"
            else None
        )
        self.path.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "device": str(pl_module.device), "peak_MiB": peak}
        (self.path / f"peak_memory_rank{trainer.global_rank}.json").write_text(json.dumps(record))
