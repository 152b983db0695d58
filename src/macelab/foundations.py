"""Foundation models by name: ``MACECalculator("mace-off-small", trust_pickle=True)``.

:data:`FOUNDATION_MODELS` lists the official mace-torch files macelab knows (name -> URL,
sha256, size, license), with the URLs mace-torch 0.3.16 itself downloads from
(``mace/calculators/foundations_models.py``). A name resolves in three steps:

1. **download** (:func:`fetch`) into ``<cache>/models/<name>/`` (``<cache>`` is
   ``$MACELAB_CACHE`` or ``~/.cache/macelab``), with a progress bar, through a temporary
   file that is checked before it is renamed into place;
2. **checksum**: the file must match a known sha256. The upstream projects publish none
   (checked in December 2026: not in mace-torch, nor on the release pages), so the entries
   carry ``sha256=None`` and macelab downloads nothing until you choose one of:

   - ``pin_checksum(name, sha256)``: a value you got from a source you trust;
   - ``fetch(name, accept_unpinned=True)``: trust the first download; its sha256 is logged
     and recorded next to it (``<file>.sha256``) and every later use checks it;

   a file whose sha256 differs from the expected one is refused and deleted
   (:class:`~macelab.errors.ChecksumMismatchError`), a cached file that changed too;
3. **conversion** (:func:`load`): the file is a pickled mace-torch model, which runs code
   as it loads, so it is unpickled only with ``trust_pickle=True`` (checked before
   anything is downloaded). A checksum says the bytes are the ones you pinned, not that
   they are harmless: trusting them stays your decision, per call, and there is no global
   switch. The converted macelab model (:func:`macelab.interop.from_mace_torch`) is cached
   as a model folder (safetensors + YAML, tagged with the source's sha256), so later uses
   of the name load that folder without unpickling anything and need no ``trust_pickle``.

``MACELAB_OFFLINE=1`` forbids downloads (cached files still load).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from macelab.data.download import TIMEOUT_S, default_cache_dir, download_verified, offline
from macelab.data.files import raw_sha256
from macelab.data.statistics import DatasetStatistics
from macelab.errors import (
    ChecksumMismatchError,
    ConfigError,
    MacelabError,
    MissingDataError,
    UntrustedFileError,
)
from macelab.interop import from_mace_torch
from macelab.training.artifact import is_artifact, load_artifact, save_artifact
from macelab.training.checkpoint import load_model

log = logging.getLogger(__name__)

ASL = "Academic Software License (https://github.com/gabor1/ASL): academic, non-commercial use"
MIT = "MIT"
_MACE_OFF = "https://raw.githubusercontent.com/ACEsuit/mace-off/main/mace_off23"
_MACE_MP = "https://github.com/ACEsuit/mace-mp/releases/download/mace_mp_0"
CONVERTED = "macelab"  # the converted model folder inside a model's cache folder


@dataclass(frozen=True)
class FoundationModel:
    """One official model file.

    Attributes:
        name: macelab's name for it (``mace-off-small``).
        url: where it is downloaded from.
        sha256: published sha256 of the file, or ``None`` where none is published.
        size: size in bytes, or ``None`` if unknown.
        license: the license the authors release it under.
        description: what it is, and the paper to cite.
    """

    name: str
    url: str
    sha256: str | None
    size: int | None
    license: str
    description: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("?")[0]


_OFF = "MACE-OFF23 organic force field (SPICE, wB97M-D3BJ), Kovács et al., arXiv:2312.15211"
_MP = "MACE-MP-0 materials model (MPtrj, PBE/PBE+U), Batatia et al., arXiv:2401.00096"
FOUNDATION_MODELS: dict[str, FoundationModel] = {
    entry.name: entry
    for entry in (
        FoundationModel(
            "mace-off-small", f"{_MACE_OFF}/MACE-OFF23_small.model", None, None, ASL, _OFF
        ),
        FoundationModel(
            "mace-off-medium", f"{_MACE_OFF}/MACE-OFF23_medium.model", None, None, ASL, _OFF
        ),
        FoundationModel(
            "mace-off-large", f"{_MACE_OFF}/MACE-OFF23_large.model", None, None, ASL, _OFF
        ),
        FoundationModel(
            "mace-mp-0-small",
            f"{_MACE_MP}/2023-12-10-mace-128-L0_energy_epoch-249.model",
            None,
            None,
            MIT,
            _MP,
        ),
        FoundationModel(
            "mace-mp-0-medium",
            f"{_MACE_MP}/2023-12-03-mace-128-L1_epoch-199.model",
            None,
            None,
            MIT,
            _MP,
        ),
    )
}
"""The foundation models macelab resolves by name."""


def is_foundation_model(name: object) -> bool:
    """Whether ``name`` is a registered name (and not, say, a path)."""
    return isinstance(name, str) and name in FOUNDATION_MODELS


def _entry(name: str) -> FoundationModel:
    if name not in FOUNDATION_MODELS:
        raise ConfigError(
            f"{name!r} is not a foundation model macelab knows; the names are "
            f"{', '.join(FOUNDATION_MODELS)} (or give the path of a file)."
        )
    return FOUNDATION_MODELS[name]


def model_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """The cache folder of model ``name``: ``<cache>/models/<name>``."""

    return Path(cache_dir or default_cache_dir()).expanduser() / "models" / _entry(name).name


def model_path(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where the downloaded file of ``name`` is (or will be) kept."""
    return model_dir(name, cache_dir) / _entry(name).filename


def _pin_file(name: str, cache_dir: str | Path | None) -> Path:
    path = model_path(name, cache_dir)
    return path.with_name(path.name + ".sha256")


def expected_sha256(name: str, cache_dir: str | Path | None = None) -> str | None:
    """The sha256 the file of ``name`` must have: published in the registry, else pinned
    (:func:`pin_checksum`, or recorded by a first download with ``accept_unpinned``)."""
    entry = _entry(name)
    if entry.sha256 is not None:
        return entry.sha256
    pin = _pin_file(name, cache_dir)
    return pin.read_text().split()[0] if pin.is_file() else None


def pin_checksum(name: str, sha256: str, cache_dir: str | Path | None = None) -> Path:
    """Record ``sha256`` as the checksum the file of ``name`` must have; returns the pin file.

    Refused if the registry publishes another value, or if a cached file differs."""
    entry = _entry(name)
    sha256 = sha256.strip().lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ConfigError(f"{sha256!r} is not a sha256 (64 hexadecimal digits).")
    if entry.sha256 is not None and entry.sha256 != sha256:
        raise ConfigError(f"{name} has the published sha256 {entry.sha256}, not {sha256}.")
    path = model_path(name, cache_dir)
    if path.is_file():
        _check_file(path, sha256, entry)
    pin = _pin_file(name, cache_dir)
    pin.parent.mkdir(parents=True, exist_ok=True)
    pin.write_text(f"{sha256}  {entry.filename}\n")
    return pin


def _check_file(path: Path, sha256: str, entry: FoundationModel) -> None:

    actual = raw_sha256(path)
    if actual != sha256:
        path.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"sha256 {actual} differs from the expected {sha256}; the file was refused and "
            f"deleted. The server may have sent an error page or another version ({entry.url})"
            ", or the cached copy was changed: download it again, and if it still differs, "
            "check the pinned checksum.",
            file=path,
            field="sha256",
        )


def fetch(
    name: str,
    *,
    sha256: str | None = None,
    accept_unpinned: bool = False,
    cache_dir: str | Path | None = None,
    timeout: float | None = None,
) -> Path:
    """The verified local file of foundation model ``name``, downloaded if not cached.

    Args:
        name: a key of :data:`FOUNDATION_MODELS`.
        sha256: the checksum to require (pinned as with :func:`pin_checksum`).
        accept_unpinned: where no checksum is published or pinned, download anyway and
            record the downloaded file's sha256 (trust on first use).
        cache_dir: the cache folder (default ``$MACELAB_CACHE`` or ``~/.cache/macelab``).
        timeout: seconds without data before a download fails.

    Raises:
        ConfigError: no checksum is known and ``accept_unpinned`` is false (nothing is
            downloaded), or an unknown name.
        ChecksumMismatchError: the download, or the cached file, has another sha256.
        MissingDataError: the download failed, or ``MACELAB_OFFLINE=1``.
    """

    entry = _entry(name)
    if sha256 is not None:
        pin_checksum(name, sha256, cache_dir)
    expected = expected_sha256(name, cache_dir)
    path = model_path(name, cache_dir)
    if path.is_file():
        if expected is None:  # a file put there by hand, never pinned
            raise ConfigError(_unpinned_message(entry, cached=path))
        _check_file(path, expected, entry)
        return path
    if expected is None and not accept_unpinned:
        raise ConfigError(_unpinned_message(entry))
    if offline():
        raise MissingDataError(
            f"is not in the cache and MACELAB_OFFLINE is set; it is at {entry.url}.", file=path
        )
    log.warning("%s is released under: %s", name, entry.license)

    def check(temp: Path) -> None:
        if expected is not None:
            _check_file(temp, expected, entry)

    download_verified(entry.url, path, check, timeout=timeout or TIMEOUT_S, name=name)
    actual = raw_sha256(path)
    if expected is None:
        _pin_file(name, cache_dir).write_text(f"{actual}  {entry.filename}\n")
        log.warning(
            "%s: no published checksum; trusting this first download (sha256 %s), recorded "
            "in %s and checked on every later use",
            name,
            actual,
            _pin_file(name, cache_dir),
        )
    return path


def _unpinned_message(entry: FoundationModel, cached: Path | None = None) -> str:
    where = f"the cached file {cached} has" if cached else "its file has"
    return (
        f"{entry.name}: {where} no published or pinned sha256, so macelab cannot verify it "
        f"({entry.url}). Pin the checksum of a copy you trust, "
        f"macelab.foundations.pin_checksum({entry.name!r}, '<sha256>'), or accept the first "
        f"download, macelab.foundations.fetch({entry.name!r}, accept_unpinned=True): its "
        "sha256 is then recorded and checked on every later use."
    )


def load(
    name: str,
    *,
    trust_pickle: bool = False,
    cache_dir: str | Path | None = None,
    head: str | int | None = None,
) -> torch.nn.Module:
    """Foundation model ``name`` as a macelab MACE (CPU, eval mode, the file's dtype).

    The first use downloads and verifies the file (:func:`fetch`: a checksum must be known
    or pinned), unpickles it (only with ``trust_pickle=True``), converts it exactly with
    :func:`~macelab.interop.from_mace_torch` and caches the result as a model folder; later
    uses load that folder (no unpickling, no ``trust_pickle``) if it was converted from a
    file with the current expected sha256.
    """

    entry = _entry(name)
    folder = model_dir(name, cache_dir) / CONVERTED
    expected = expected_sha256(name, cache_dir)
    if head is None and is_artifact(folder):
        model, config = load_artifact(folder)
        source = (config.get("metadata") or {}).get("source_sha256")
        if expected is not None and source == expected:
            return model
        log.warning(
            "%s was converted from a file with sha256 %s, not the expected %s; converting again",
            folder,
            source,
            expected,
        )
    if not trust_pickle:
        raise UntrustedFileError(
            f"{entry.name} is a mace-torch model file, a Python pickle: loading it runs code "
            "stored in the file, so macelab unpickles it only when you say you trust it. "
            f"It comes from {entry.url} ({entry.license}); if you trust that source, pass "
            "trust_pickle=True (trust_pickle=true on the command line). The converted model "
            "is then cached and later uses need no opt-in (docs/security.md).",
            file=model_path(name, cache_dir),
        )

    path = fetch(name, cache_dir=cache_dir)
    model = from_mace_torch(path, head=head, trust_pickle=True)
    if head is None:
        _save_converted(model, folder, expected_sha256(name, cache_dir), entry)
    return model


def _save_converted(
    model: torch.nn.Module, folder: Path, source_sha256: str | None, entry: FoundationModel
) -> None:

    h = model.hyperparameters
    statistics = DatasetStatistics(
        atomic_numbers=list(h["atomic_numbers"]),
        atomic_energies=list(h["atomic_energies"]),
        avg_num_neighbors=float(h["avg_num_neighbors"]),
        mean_interaction_energy_per_atom=float(h["shift"]),
        std_interaction_energy_per_atom=float("nan"),
        rms_forces=float(h["scale"]),
        num_configurations=0,
        r_max=float(h["r_max"]),
        e0_source="file",
    )
    metadata = {"source": entry.url, "source_sha256": source_sha256, "license": entry.license}
    save_artifact(model, dict(h), statistics.to_dict(), folder, metadata=metadata)
    log.info("cached the converted %s in %s", entry.name, folder)


def missing_model_message(source: str) -> str:
    """What to say when ``source`` is neither a file nor a registered name."""
    return (
        f"{source} is neither a file nor a folder, nor a foundation model name "
        f"({', '.join(FOUNDATION_MODELS)})."
    )


__all__ = [
    "FOUNDATION_MODELS",
    "FoundationModel",
    "expected_sha256",
    "fetch",
    "is_foundation_model",
    "load",
    "missing_model_message",
    "model_dir",
    "model_path",
    "pin_checksum",
]


def open_model(
    source: str | Path,
    *,
    use_ema: bool = True,
    trust_pickle: bool = False,
) -> torch.nn.Module:
    """A macelab model (CPU, eval mode) from any of: a macelab checkpoint (its EMA weights
    unless ``use_ema=False``), a model folder, a mace-torch ``.model`` file, or a foundation
    model name of :data:`FOUNDATION_MODELS` (``mace-off-small``).

    mace-torch files are pickles: they load only with ``trust_pickle=True`` (as do
    checkpoints holding more than tensors); a foundation model needs it on first use only
    (:func:`load`).
    """
    path = Path(source)
    if is_foundation_model(str(source)) and not path.exists():
        return load(str(source), trust_pickle=trust_pickle)
    if path.suffix == ".model" and path.is_file():
        return from_mace_torch(path, trust_pickle=trust_pickle)
    if not path.exists():
        raise MacelabError(missing_model_message(str(source)))
    model, _ = load_model(path, use_ema=use_ema, trust_pickle=trust_pickle)
    return model
