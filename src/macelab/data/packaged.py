"""The AcAc files that ship inside the package (gzip), so the Quick start works offline.

``packaged/acac/`` holds ``train_300K``, the four test sets and the isolated atoms, each
``.xyz.gz``, with the BOTNet-datasets licence and ``SHA256SUMS`` of the uncompressed files.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from macelab.data.files import content_sha256
from macelab.errors import DataError

PACKAGED_DIR = Path(__file__).resolve().parent / "packaged"
_FOLDERS = {"dataset_acac": "acac"}


@cache
def _sums(folder: str) -> dict[str, str]:
    """File name -> sha256 from ``packaged/<folder>/SHA256SUMS``."""
    lines = (PACKAGED_DIR / folder / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def packaged_path(relpath: str) -> Path | None:
    """The packaged copy of ``relpath`` (e.g. ``dataset_acac/train_300K.xyz``), if any."""
    parts = Path(relpath).parts
    if len(parts) != 2 or parts[0] not in _FOLDERS:
        return None
    folder = _FOLDERS[parts[0]]
    if parts[1] not in _sums(folder):
        return None
    path = PACKAGED_DIR / folder / f"{parts[1]}.gz"
    return path if path.is_file() else None


def packaged_sha256(relpath: str) -> str | None:
    """The recorded sha256 of the uncompressed packaged copy of ``relpath``, if any."""
    parts = Path(relpath).parts
    if len(parts) != 2 or parts[0] not in _FOLDERS:
        return None
    return _sums(_FOLDERS[parts[0]]).get(parts[1])


def verify_packaged(relpath: str, digest: str | None = None) -> str:
    """Check the packaged copy of ``relpath`` against SHA256SUMS; return its sha256."""
    path = packaged_path(relpath)
    expected = packaged_sha256(relpath)
    if path is None or expected is None:
        raise DataError("has no packaged copy.", file=relpath)
    actual = digest or content_sha256(path)
    if actual != expected:
        raise DataError(
            f"the packaged copy {path} has sha256 {actual}, but SHA256SUMS records {expected}; "
            "the installation is damaged: reinstall macelab or set data.root to a copy of the "
            "data.",
            file=path,
            field="sha256",
        )
    return actual
