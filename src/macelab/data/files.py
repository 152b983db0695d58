"""Reading data files whether or not they are gzip-compressed, and hashing their content.

Files are identified by the sha256 of their *uncompressed* content, so that the packaged
(gzip) copy of a file, the official copy and a user's copy of the same data share one
checksum and one graph cache entry.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20


def is_gzip(path: str | Path) -> bool:
    """Whether ``path`` is gzip-compressed (judged by its magic bytes, not its name)."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def read_bytes(path: str | Path) -> bytes:
    """The uncompressed content of ``path`` (gzip or plain)."""
    if is_gzip(path):
        with gzip.open(path, "rb") as handle:
            return handle.read()
    return Path(path).read_bytes()


def read_text(path: str | Path) -> str:
    """The uncompressed content of ``path`` as text (UTF-8, undecodable bytes replaced)."""
    return read_bytes(path).decode("utf-8", errors="replace")


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_sha256(path: str | Path) -> str:
    """sha256 of the uncompressed content of ``path``, read in chunks."""
    digest = hashlib.sha256()
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def raw_sha256(path: str | Path) -> str:
    """sha256 of the bytes of ``path`` as stored (compressed or not): what a download checks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: str | Path) -> str:
    """The git object id of ``path`` (sha1 of ``b"blob <size>\\0" + content``).

    A repository's tree lists this id for every file, so it verifies a file downloaded from
    a git host even where no sha256 was ever published.
    """
    size = Path(path).stat().st_size
    digest = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
