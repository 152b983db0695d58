"""Official benchmark files: where they live on the web, their checksums, and a downloader.

Every file macelab can fetch has a :class:`RemoteFile` entry in :data:`REGISTRY`, keyed by
its path under a data root (``dataset_3BPA/test_300K.xyz``); downloads land under
``<cache>/downloads/`` with the same relative path, so the download cache is laid out like a
data root. The cache folder is ``$MACELAB_CACHE`` or ``~/.cache/macelab``.

A download goes to a temporary file in the target folder, is verified, and only then renamed
into place, so an interrupted or corrupted download never looks like a good file. Verification
uses, in order of preference, the published sha256 or the git object id that the source
repository's tree lists (as good as a checksum: it hashes the full content). A mismatch is
refused (:class:`~macelab.errors.ChecksumMismatchError`) and the temporary file deleted. A file
with neither is kept with a warning that gives its computed sha256.

Provenance of the checksums: the BOTNet-datasets sha256 values are those of the shared data
README (and they match the repository's git object ids); the four 3BPA test files and the
rMD17 archive were not available to us, so their sha256 is ``None``. For the 3BPA test files
the git object ids come from the repository tree at commit ``29e6d46``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from macelab.data.files import git_blob_sha1, raw_sha256
from macelab.data.rmd17 import RMD17_MOLECULES
from macelab.errors import ChecksumMismatchError, DataError, MissingDataError

log = logging.getLogger(__name__)

BOTNET_COMMIT = "29e6d467317e4b5967b7ea5cbee54de953fa0d45"
BOTNET_URL = f"https://raw.githubusercontent.com/davkovacs/BOTNet-datasets/{BOTNET_COMMIT}"
RMD17_URL = "https://figshare.com/ndownloader/files/23950376"
"""rMD17 archive ``rmd17.tar.bz2``, figshare DOI 10.6084/m9.figshare.12672038."""

RMD17_ARCHIVE = "rmd17.tar.bz2"
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RemoteFile:
    """One official file.

    Attributes:
        relpath: its path under a data root, e.g. ``dataset_acac/train_300K.xyz``.
        url: where to download it from (for archive members: the archive's URL).
        sha256: published sha256 of the file as downloaded, or ``None`` if unknown.
        size: size in bytes, or ``None`` if unknown.
        git_blob_sha1: the git object id listed in the source repository's tree, if any.
        archive: for a file that ships inside an archive, the archive's ``relpath``.
    """

    relpath: str
    url: str
    sha256: str | None = None
    size: int | None = None
    git_blob_sha1: str | None = None
    archive: str | None = None


def _botnet(relpath: str, size: int | None, blob: str, sha256: str | None) -> RemoteFile:
    return RemoteFile(relpath, f"{BOTNET_URL}/{relpath}", sha256, size, blob)


_FILES = [
    # 3BPA (BOTNet-datasets/dataset_3BPA)
    _botnet(
        "dataset_3BPA/iso_atoms.xyz",
        504,
        "83cc59ef37e4f1526fb073ad12103a75af746b86",
        "e12a2465a2612bf38fd5dabdf64d4b57fc58ce9610a858c54ea1142d517c053f",
    ),
    _botnet(
        "dataset_3BPA/train_300K.xyz",
        1504880,
        "93cdf96b0a4d8d81ca52889c4697a553471779f5",
        "d109971fab90e2231ad931a83eb704c8d940f5c7d7a8de27fe3b84ea18634c0a",
    ),
    _botnet(
        "dataset_3BPA/train_mixedT.xyz",
        1504818,
        "29a3993db824e41b1160193e447b99e1ffb1463a",
        "bc108532964b2ed259eaaabf82e5dfaffa5bda9ac384fc2afabcce192a49250b",
    ),
    _botnet("dataset_3BPA/test_300K.xyz", None, "6ea840dfce31bd7667a26e592f3625729c90441b", None),
    _botnet("dataset_3BPA/test_600K.xyz", None, "681d24eeb4e9193644e6db58193b50e205a5bc0f", None),
    _botnet("dataset_3BPA/test_1200K.xyz", None, "94beb5238c3573e4be4d368928460f951e07e513", None),
    _botnet("dataset_3BPA/test_dih.xyz", None, "7bdd390b9aed0a677dd8036a3a5055a0b648d1f5", None),
    # AcAc (BOTNet-datasets/dataset_acac)
    _botnet(
        "dataset_acac/isolated_atoms.xyz",
        455,
        "beb88f3f07c8cfd8dc23cb650d1ec3aa85c62c4d",
        "b74f321b453374621b447d65c60979f70df1b7182c8ee0215388b2c574f33823",
    ),
    _botnet(
        "dataset_acac/train_300K.xyz",
        880100,
        "5f83fc060856b25b9942b320c73a6b58dbc29c0a",
        "8f5706d6902360555a5be59395612d2afc3489a75688388a58e7275fdad68af3",
    ),
    _botnet(
        "dataset_acac/train_600K.xyz",
        880112,
        "89e4bc55889822540786efa0366ceb3559e53ba6",
        "180c2538508f7810a623c279426f44953ee7cfb2af77e48ea3986ff97645a71c",
    ),
    _botnet(
        "dataset_acac/test_MD_300K.xyz",
        1144100,
        "01d273fdf2a11b3d462143b1b538f367845771ef",
        "2291f3186a3cc6a5e05e92952c84a9237ca53f862d78fd3316a769360719ec43",
    ),
    _botnet(
        "dataset_acac/test_MD_600K.xyz",
        1144153,
        "60920a5a506f7581c7a0f3c9f0cf677b1af03079",
        "d5a5bba154ec43f915eb7529f86ec3af60e6f911743859daba030181a0378ff7",
    ),
    _botnet(
        "dataset_acac/test_H_transfer.xyz",
        14306,
        "b0b2c6c542d6cef64b5d17d5bbbaf7b2d4a274c3",
        "ea4d76c79cf4cfccd2f93eaf755172b0b648886c4907eb0f82dff07a77530743",
    ),
    _botnet(
        "dataset_acac/test_dihedral.xyz",
        43974,
        "6b98a848f50cd355df71b6292d1bf8e34d0f6267",
        "0c2246a593579de5a4450698d5f4ba5802b095824b7f211aa5889339967c6809",
    ),
    # rMD17: one archive on figshare; its members are extracted on demand.
    RemoteFile(RMD17_ARCHIVE, RMD17_URL),
    *(
        RemoteFile(f"rmd17/npz_data/rmd17_{molecule}.npz", RMD17_URL, archive=RMD17_ARCHIVE)
        for molecule in RMD17_MOLECULES
    ),
    *(
        RemoteFile(f"rmd17/splits/index_{kind}_0{split}.csv", RMD17_URL, archive=RMD17_ARCHIVE)
        for kind in ("train", "test")
        for split in range(1, 6)
    ),
]

REGISTRY: dict[str, RemoteFile] = {entry.relpath: entry for entry in _FILES}
"""Every file macelab can download, by its path under a data root."""


def default_cache_dir() -> Path:
    """``$MACELAB_CACHE`` if set, else ``~/.cache/macelab``."""
    env = os.environ.get("MACELAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "macelab"


def downloads_dir(cache_dir: str | Path | None = None) -> Path:
    """The folder downloads go to; laid out like a data root."""
    return Path(cache_dir or default_cache_dir()).expanduser() / "downloads"


def offline() -> bool:
    """Whether downloads are switched off by ``MACELAB_OFFLINE=1``."""
    return os.environ.get("MACELAB_OFFLINE", "").strip().lower() in {"1", "true", "yes"}


def verify(path: Path, entry: RemoteFile) -> str:
    """Check a downloaded file against ``entry``; return how it was verified.

    Raises :class:`ChecksumMismatchError` when a known checksum or size disagrees.
    """
    actual_sha256 = raw_sha256(path)
    if entry.size is not None and path.stat().st_size != entry.size:
        raise ChecksumMismatchError(
            f"downloaded {path.stat().st_size} bytes, expected {entry.size}; the download "
            f"from {entry.url} was refused and deleted. Retry, or fetch the file by hand.",
            file=entry.relpath,
            field="size",
        )
    if entry.sha256 is not None:
        if actual_sha256 != entry.sha256:
            raise ChecksumMismatchError(
                f"sha256 {actual_sha256} differs from the published {entry.sha256}; the "
                f"download from {entry.url} was refused and deleted. The server may have sent "
                "an error page or a different version: retry, or fetch the file by hand.",
                file=entry.relpath,
                field="sha256",
            )
        return "sha256"
    if entry.git_blob_sha1 is not None:
        actual_blob = git_blob_sha1(path)
        if actual_blob != entry.git_blob_sha1:
            raise ChecksumMismatchError(
                f"git object id {actual_blob} differs from {entry.git_blob_sha1} in the source "
                f"repository's tree; the download from {entry.url} was refused and deleted.",
                file=entry.relpath,
                field="git_blob_sha1",
            )
        log.info("%s verified by git object id; its sha256 is %s", entry.relpath, actual_sha256)
        return "git_blob_sha1"
    log.warning(
        "%s is UNVERIFIED: no published checksum is recorded for it in macelab; its sha256 "
        "is %s (compare it with a trusted copy).",
        entry.relpath,
        actual_sha256,
    )
    return "unverified"


def _fetch(url: str, target: Path, timeout: float) -> None:
    """Stream ``url`` into ``target`` with a progress bar."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "macelab"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=None) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))


def download_verified(
    url: str,
    destination: Path,
    check: Callable[[Path], object],
    *,
    timeout: float = TIMEOUT_S,
    name: str | None = None,
) -> Path:
    """Download ``url`` to ``destination`` with a progress bar, through a temporary file in
    the same folder that ``check`` (raising to refuse) sees before it is renamed into place;
    a refused or interrupted download is deleted. ``name`` labels errors (default: the URL).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    os.close(handle)
    temp = Path(temp_name)
    try:
        log.info("downloading %s from %s", name or destination.name, url)
        try:
            _fetch(url, temp, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MissingDataError(
                f"could not be downloaded from {url} ({reason}).", file=name or url
            ) from None
        check(temp)
        os.replace(temp, destination)
    finally:
        temp.unlink(missing_ok=True)
    return destination


def _download_entry(entry: RemoteFile, destination: Path, timeout: float) -> Path:
    return download_verified(
        entry.url,
        destination,
        lambda temp: verify(temp, entry),
        timeout=timeout,
        name=entry.relpath,
    )


SMALL_MEMBER_BYTES = 1 << 20


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, destination: Path) -> None:
    source = tar.extractfile(member)
    if source is None:  # a directory or link, not a file
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    try:
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(source, out)
        os.replace(temp_name, destination)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def _extract_member(archive: Path, entry: RemoteFile, destination: Path) -> Path:
    """Extract ``entry.relpath`` from ``archive`` (members are stored under that same path).

    One pass over the (compressed, sequential) archive also extracts every other small
    registered member of it (the split files), so that a run needing the npz and two splits
    decompresses the archive once, not three times.
    """
    root = destination.parents[len(Path(entry.relpath).parts) - 1]
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                wanted = member.name == entry.relpath
                small = (
                    member.name in REGISTRY
                    and REGISTRY[member.name].archive == entry.archive
                    and member.size <= SMALL_MEMBER_BYTES
                    and not (root / member.name).is_file()
                )
                if wanted or small:
                    _write_member(tar, member, root / member.name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"the archive {archive} cannot be read ({exc}); delete it to download a fresh copy.",
            file=archive,
        ) from None
    if not destination.is_file():
        raise DataError(
            f"the archive {archive} has no member '{entry.relpath}'; delete it to download "
            "a fresh copy.",
            file=archive,
            field=entry.relpath,
        )
    return destination


def download(
    relpath: str, *, cache_dir: str | Path | None = None, timeout: float = TIMEOUT_S
) -> Path:
    """Download the official file ``relpath`` into the cache (if not already there).

    Returns its local path. Raises :class:`MissingDataError` when it cannot be downloaded
    (offline, or ``MACELAB_OFFLINE=1``) and :class:`ChecksumMismatchError` when the
    download does not match the registry.
    """
    entry = REGISTRY.get(relpath)
    if entry is None:
        raise MissingDataError(
            "is not one of the official files macelab knows how to download; put it under "
            "data.root yourself.",
            file=relpath,
        )
    destination = downloads_dir(cache_dir) / relpath
    if destination.is_file():
        return destination
    if offline():
        raise MissingDataError(
            f"is not in the download cache and MACELAB_OFFLINE is set; it is at {entry.url}.",
            file=relpath,
        )
    if entry.archive is None:
        return _download_entry(entry, destination, timeout)
    archive = download(entry.archive, cache_dir=cache_dir, timeout=timeout)
    return _extract_member(archive, entry, destination)
