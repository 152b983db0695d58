"""Ways to kill a training run, for tests: an exception after a given step (in-process
runs), and real SIGKILLs at chosen moments (runs in a subprocess)."""

from __future__ import annotations

import io
import os
import signal
import time
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from macelab.training.checkpoint_io import AtomicCheckpointIO, write_atomically


class KilledError(RuntimeError):
    """Raised to stop a run as abruptly as a kill would."""


class KillAfterStep(Callback):
    """Raise :class:`KilledError` after the batch that brings ``global_step`` to ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            raise KilledError(f"killed after step {trainer.global_step}")


# Real kills (SIGKILL) at chosen moments, for runs of `python -m macelab.train` in a subprocess
# (tests/training/test_kill_resume.py); the overrides name them, e.g.
# checkpoint_io._target_=tests.training.killer.SigkillDuringSave.


def sigkill_self() -> None:
    """Die as ``kill -9`` kills: no exception, no clean-up, no flushing of Python buffers."""
    os.kill(os.getpid(), signal.SIGKILL)


class SigkillDuringSave(AtomicCheckpointIO):
    """macelab's checkpoint writer, killed halfway through writing the ``nth`` save of
    ``file`` (``last.ckpt`` or ``best.ckpt``) of this process."""

    def __init__(self, file: str, nth: int = 1) -> None:
        super().__init__()
        self.file, self.nth = file, nth
        self.saves: Counter[str] = Counter()

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        name = Path(path).name
        self.saves[name] += 1
        if name != self.file or self.saves[name] != self.nth:
            return super().save_checkpoint(checkpoint, path, storage_options)

        def write_half_and_die(stream) -> None:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            data = buffer.getvalue()
            stream.write(data[: len(data) // 2])
            stream.flush()
            sigkill_self()

        write_atomically(path, write_half_and_die)


class SlowSaves(AtomicCheckpointIO):
    """macelab's checkpoint writer, writing each checkpoint in ten pieces over ``seconds``:
    a kill at a random moment then often comes during a save."""

    def __init__(self, seconds: float = 0.2) -> None:
        super().__init__()
        self.seconds = seconds

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        def write_slowly(stream) -> None:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            data = buffer.getvalue()
            piece = len(data) // 10 + 1
            for start in range(0, len(data), piece):
                stream.write(data[start : start + piece])
                stream.flush()
                time.sleep(self.seconds / 10)

        write_atomically(path, write_slowly)


class SigkillAtEpochStart(Callback):
    """SIGKILL at the start of the epoch that begins after ``step`` optimiser steps (after
    the previous epoch's end-of-epoch checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            sigkill_self()


class MarkTrainingStarted(Callback):
    """Create ``path`` when training starts (the test then knows when to aim its kill)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer, pl_module) -> None:
        self.path.touch()
