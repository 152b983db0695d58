"""Errors that macelab raises for problems a user can fix.

Every error here carries a one-paragraph message that names what is wrong and what to do.
The command-line entry points catch :class:`MacelabError` and print only that message (see
:mod:`macelab.cli`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class MacelabError(Exception):
    """Base class for errors a user can fix; the message says how."""


class DataError(MacelabError, ValueError):
    """Bad or missing input data, with the file, the record and the field it concerns.

    Args:
        message: what is wrong and what to do about it.
        file: the file that holds the bad data (or is missing).
        record: the frame index (or line) inside the file, if the problem is in one record.
        field: the name of the array or key concerned (e.g. ``forces``).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        record: int | str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.record = record
        self.field = field
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if record is not None:
            where.append(f"record {record}" if isinstance(record, int) else str(record))
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class AtomsTooCloseError(DataError):
    """Two atoms of a structure closer than the configured minimum distance.

    Attributes:
        pair: ``(i, j, distance)``, the atom indices and their distance in Å.
        min_distance: the threshold, Å.
    """

    def __init__(
        self,
        message: str,
        *,
        pair: tuple[int, int, float],
        min_distance: float,
        file: str | Path | None = None,
        record: int | str | None = None,
    ) -> None:
        super().__init__(message, file=file, record=record, field="positions")
        self.pair = pair
        self.min_distance = min_distance


class ConfigError(MacelabError, ValueError):
    """A configuration that cannot work, with the key concerned and what to set instead."""


class MissingDataError(DataError, FileNotFoundError):
    """A data file that is not on disk and could not be downloaded."""


class ChecksumMismatchError(DataError):
    """A file whose checksum differs from the published one; it was refused, not used."""


class UntrustedFileError(MacelabError):
    """A file that would run code from itself if loaded, refused because it is not trusted.

    Args:
        message: what the file holds, why it was refused and how to opt in.
        file: the file refused.
    """

    def __init__(self, message: str, *, file: str | Path) -> None:
        self.file = str(file)
        super().__init__(message)
