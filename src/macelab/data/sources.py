"""Loading one source file into a graph store, through the cache.

These two functions are what the dataset modules call: read a file (xyz, or frames of an
rMD17 npz), build its graphs within ``r_max``, and keep the result in the graph cache keyed by
the file's content, so that the second load skips both parsing and neighbour search.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import numpy as np

from macelab.data import cache
from macelab.data.download import REGISTRY
from macelab.data.files import content_sha256
from macelab.data.locate import LocatedFile
from macelab.data.packaged import verify_packaged
from macelab.data.rmd17 import read_rmd17_npz
from macelab.data.store import GraphStore
from macelab.data.xyz import DEFAULT_KEYS, LabelKeys, first_frame_keys, read_xyz
from macelab.errors import DataError

log = logging.getLogger(__name__)


def _digest(located: LocatedFile) -> str:
    """Content sha256 of a located file, checked against what macelab knows about it."""
    digest = content_sha256(located.path)
    if located.origin == "packaged":
        verify_packaged(located.name, digest)
    entry = REGISTRY.get(located.name)
    if entry is not None and entry.sha256 is not None and entry.sha256 != digest:
        log.warning(
            "%s (%s) differs from the official file (sha256 %s, expected %s); results will "
            "not be comparable with published ones.",
            located.name,
            located.path,
            digest,
            entry.sha256,
        )
    return digest


def build_xyz_store(located: LocatedFile, r_max: float, keys: LabelKeys) -> GraphStore:
    """Parse an xyz file and build its graphs (no cache)."""
    configs = read_xyz(located.path, keys, name=located.name)
    meta = {"keys_seen": first_frame_keys(located.path)}
    return GraphStore.from_configurations(configs, r_max, source=located.name, meta=meta)


def load_xyz_store(
    located: LocatedFile,
    r_max: float,
    keys: LabelKeys = DEFAULT_KEYS,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> GraphStore:
    """The graphs of an extended XYZ file, from the cache when possible."""
    params = {"kind": "xyz", "sha256": _digest(located), "r_max": float(r_max)}
    params["keys"] = keys.as_dict()
    store, hit = cache.cached(
        params,
        lambda: build_xyz_store(located, r_max, keys),
        cache_dir=cache_dir,
        enabled=use_cache,
    )
    store.source = located.name
    log.info("%s: %d graphs (%s)", located.name, len(store), "cached" if hit else "built")
    return store


def npz_num_frames(located: LocatedFile) -> int:
    """Number of frames of an rMD17 npz, from the ``energies`` array header (no full read)."""
    try:
        with zipfile.ZipFile(located.path) as archive, archive.open("energies.npy") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(handle)
    except KeyError:
        raise DataError(
            "has no 'energies' array; an rMD17 npz holds nuclear_charges, coords, energies "
            "and forces.",
            file=located.name,
            field="energies",
        ) from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"is not a readable npz archive ({exc}); it is truncated or corrupted. Re-download it.",
            file=located.name,
        ) from None
    if len(shape) != 1:
        raise DataError(
            f"expected a 1-d energies array, got shape {shape}.",
            file=located.name,
            field="energies",
        )
    return int(shape[0])


def build_rmd17_store(located: LocatedFile, r_max: float, indices: np.ndarray | None) -> GraphStore:
    """Read an rMD17 npz (eV units) and build the graphs of frames ``indices`` (no cache)."""
    arrays = read_rmd17_npz(located.path, name=located.name)
    return GraphStore.from_frames(arrays.frames(indices), r_max, source=located.name)


def load_rmd17_store(
    located: LocatedFile,
    r_max: float,
    indices: np.ndarray | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> GraphStore:
    """The graphs of frames ``indices`` (all if ``None``) of an rMD17 npz, cached."""
    selection = (
        "all"
        if indices is None
        else hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()
    )
    params = {"kind": "rmd17", "sha256": _digest(located), "r_max": float(r_max)}
    params["frames"] = selection
    store, hit = cache.cached(
        params,
        lambda: build_rmd17_store(located, r_max, indices),
        cache_dir=cache_dir,
        enabled=use_cache,
    )
    store.source = located.name
    log.info("%s: %d graphs (%s)", located.name, len(store), "cached" if hit else "built")
    return store
