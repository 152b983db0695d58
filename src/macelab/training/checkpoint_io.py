"""Files that a kill at any moment leaves whole: checkpoints, ``metrics.csv``.

Lightning's default checkpoint writer serialises a checkpoint into memory, writes it to a
temporary file under ``$TMPDIR`` and moves that onto the destination. Where ``$TMPDIR`` is
on another filesystem than the run folder (a node-local ``/tmp`` and a shared output
folder), the move is a copy into the destination itself: a kill during the copy leaves
``last.ckpt`` empty or cut short, and the run cannot be resumed.

:func:`write_atomically` writes the temporary file in the destination's own folder, flushes
it to disk (``fsync``), renames it over the destination (``os.replace``, atomic within one
filesystem) and syncs the folder, so that the rename is on disk too. Whenever a kill (or a
power cut) comes, the destination holds either the previous file or the new one, complete.
:class:`AtomicCheckpointIO` is Lightning's checkpoint writer doing that (``conf/train.yaml``:
``checkpoint_io``); every checkpoint the Trainer writes goes through it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

TEMPORARY_SUFFIX = ".tmp"


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Replace ``path`` by what ``write(stream)`` writes, all at once or not at all.

    The temporary file is ``.<name>.<random>.tmp`` beside ``path``; one left behind by a
    killed writer is removed by the next successful write of the same file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent
    )
    try:
        os.fchmod(handle, _file_mode(path))  # mkstemp's 0600 would hide it from the group
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    for stale in path.parent.glob(f".{path.name}.*{TEMPORARY_SUFFIX}"):
        stale.unlink(missing_ok=True)


def _file_mode(path: Path) -> int:
    """The mode the file has, or the one a new file would get (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the filesystem lets a folder be synced)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # e.g. EINVAL on filesystems that cannot sync a folder
        pass
    finally:
        os.close(descriptor)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint writer, with :func:`write_atomically`.

    Local paths; a URL (``s3://...``) goes to Lightning's own writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_atomically(path, lambda stream: torch.save(checkpoint, stream))
