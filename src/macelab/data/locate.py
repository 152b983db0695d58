"""Finding a benchmark file: data root, packaged copy, download cache, then the web.

The data root is ``data.root`` from the config or, if that is unset, the environment variable
``MACELAB_DATA``; code never assumes where it is. For a file known by its path under a data
root (``dataset_3BPA/test_300K.xyz``), :func:`locate` looks, in order, in

1. the data root,
2. the copy packaged with macelab (AcAc only),
3. the download cache (``$MACELAB_CACHE/downloads`` or ``~/.cache/macelab/downloads``),
4. the official URL (unless downloads are off), verified before use,

and otherwise raises :class:`~macelab.errors.MissingDataError` naming the file, where it
looked, and how to point macelab at a copy.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from macelab.data import download as downloads
from macelab.data.packaged import packaged_path
from macelab.errors import MissingDataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocatedFile:
    """A data file found on disk.

    Attributes:
        path: where it is.
        name: how messages refer to it (its path under a data root, or the user's path).
        origin: ``root``, ``packaged``, ``cache``, ``downloaded`` or ``user``.
    """

    path: Path
    name: str
    origin: str


def data_root(root: str | Path | None = None) -> Path | None:
    """``root`` if given, else ``$MACELAB_DATA``, else ``None``."""
    value = root if root not in (None, "") else os.environ.get("MACELAB_DATA") or None
    return None if value is None else Path(value).expanduser()


def where_to_get(relpath: str) -> str:
    """A sentence saying where the official copy of ``relpath`` is."""
    entry = downloads.REGISTRY.get(relpath)
    if entry is None:
        return ""
    if entry.archive is not None:
        return f"It is in the archive {entry.archive} at {entry.url}."
    return f"The official copy is at {entry.url}."


def missing_message(relpath: str, root: Path | None, looked: list[str], reason: str = "") -> str:
    """The one-paragraph message for a benchmark file that cannot be found."""
    target = root / relpath if root is not None else f"<data root>/{relpath}"
    parts = [f"not found (looked in: {'; '.join(looked)}).", reason, where_to_get(relpath)]
    parts.append(
        f"Put a copy at {target} and set data.root (or the environment variable "
        "MACELAB_DATA) to that data root, or connect to the network so macelab can download "
        "it into its cache."
    )
    return " ".join(part for part in parts if part)


def locate(
    relpath: str,
    *,
    root: str | Path | None = None,
    download: bool = True,
    cache_dir: str | Path | None = None,
) -> LocatedFile:
    """Find the benchmark file ``relpath`` (see the module docstring for the order)."""
    base = data_root(root)
    looked: list[str] = []
    if base is not None:
        if not base.is_dir():
            log.warning("data root %s does not exist", base)
        candidate = base / relpath
        if candidate.is_file():
            return LocatedFile(candidate, relpath, "root")
        inside = base / relpath.removeprefix("rmd17/")  # a root that *is* the rmd17 folder
        if relpath.startswith("rmd17/") and inside.is_file():
            return LocatedFile(inside, relpath, "root")
        looked.append(f"data root {base}")
    else:
        looked.append("no data root set (data.root / MACELAB_DATA)")
    packaged = packaged_path(relpath)
    if packaged is not None:
        return LocatedFile(packaged, relpath, "packaged")
    cached = downloads.downloads_dir(cache_dir) / relpath
    if cached.is_file():
        return LocatedFile(cached, relpath, "cache")
    looked.append(f"download cache {cached.parent}")
    if relpath not in downloads.REGISTRY:
        raise MissingDataError(missing_message(relpath, base, looked), file=relpath)
    if not download or downloads.offline():
        reason = "Downloads are off (data.download=false or MACELAB_OFFLINE=1)."
        raise MissingDataError(missing_message(relpath, base, looked, reason), file=relpath)
    try:
        path = downloads.download(relpath, cache_dir=cache_dir)
    except MissingDataError as exc:
        reason = str(exc).removeprefix(f"file {relpath}: ")
        raise MissingDataError(
            missing_message(relpath, base, looked, f"The download failed: {reason}"), file=relpath
        ) from None
    return LocatedFile(path, relpath, "downloaded")


def locate_user_file(path: str | Path, *, root: str | Path | None = None, what: str) -> LocatedFile:
    """Find a user's file: absolute, relative to the data root, or relative to the cwd.

    Args:
        path: the path as given in the config.
        root: the data root, tried first for relative paths.
        what: the config key that named the file (for the message), e.g. ``data.train_file``.
    """
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else []
    base = data_root(root)
    if not given.is_absolute():
        if base is not None:
            candidates.append(base / given)
        candidates.append(Path.cwd() / given)
    for candidate in candidates:
        if candidate.is_file():
            return LocatedFile(candidate, str(path), "user")
    tried = ", ".join(str(c) for c in candidates)
    raise MissingDataError(
        f"not found (tried {tried}). Check {what}: give an absolute path, or a path relative "
        "to data.root (MACELAB_DATA) or to the directory you run macelab from.",
        file=str(path),
    )
