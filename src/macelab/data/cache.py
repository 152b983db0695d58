"""On-disk cache of processed graphs, so a second run starts in seconds.

A cache entry is one :class:`~macelab.data.store.GraphStore`, saved with ``torch.save`` under
``<cache>/graphs/<key>.pt`` (``<cache>`` is ``data.cache_dir``, else ``$MACELAB_CACHE``, else
``~/.cache/macelab``). The key is a sha256 over everything that changes the graphs: the
sha256 of the source file's content, r_max, the label keys, the frame selection, and
:data:`FORMAT_VERSION` (bumped whenever the stored layout or the graph construction changes).
Editing a file therefore never returns stale graphs; it just makes a new entry.

Entries are written to a temporary file and renamed, so concurrent ranks or an interrupted
run never leave a half-written entry; an unreadable entry is rebuilt with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from macelab.data.download import default_cache_dir
from macelab.data.store import GraphStore

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: graphs keep their shortest edge (closest_distance)


def graphs_dir(cache_dir: str | Path | None = None) -> Path:
    """The folder that holds cached graph stores."""
    return Path(cache_dir or default_cache_dir()).expanduser() / "graphs"


def cache_key(params: dict[str, Any]) -> str:
    """A stable key for ``params`` (JSON-serialisable) and the cache format version."""
    payload = json.dumps({"format": FORMAT_VERSION, **params}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


def cache_path(params: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    return graphs_dir(cache_dir) / f"{cache_key(params)}.pt"


def load(path: Path) -> GraphStore | None:
    """The store saved at ``path``, or ``None`` if there is none or it cannot be read."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return GraphStore.from_state(state)
    except Exception as exc:  # a damaged entry is rebuilt, never trusted
        log.warning("ignoring unreadable graph cache %s (%s); rebuilding it", path, exc)
        return None


def save(store: GraphStore, path: Path) -> None:
    """Write ``store`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    try:
        torch.save(store.state(), temp)
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)


def cached(
    params: dict[str, Any],
    build: Callable[[], GraphStore],
    *,
    cache_dir: str | Path | None = None,
    enabled: bool = True,
) -> tuple[GraphStore, bool]:
    """Load the store for ``params`` from the cache, or ``build`` and save it.

    Returns the store and whether it came from the cache.
    """
    if not enabled:
        return build(), False
    path = cache_path(params, cache_dir)
    store = load(path)
    if store is not None:
        log.debug("graphs from cache %s", path)
        return store, True
    store = build()
    try:
        save(store, path)
    except OSError as exc:
        log.warning("could not write the graph cache %s (%s); continuing without it", path, exc)
    return store, False
