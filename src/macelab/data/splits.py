"""Seeded train/validation splits of one training file.

The rule is mace-torch's ``random_train_valid_split``: shuffle the indices with
``numpy.random.default_rng(seed)``, the validation set is the last ``int(valid_fraction * n)``
of them (or ``num_valid``), the training set the rest (or its first ``num_train``). The same
seed gives the same split on every machine and every rank.

A file with duplicate structures (:mod:`macelab.data.duplicates`) is split by distinct
structure: the rule above runs over the distinct structures (the sizes count them), and
every copy goes to the side of its first occurrence, so no structure is both trained and
validated on. A file without duplicates gets exactly mace-torch's split.
"""

from __future__ import annotations

import numpy as np

from macelab.data.checks import check_not_empty
from macelab.errors import ConfigError


def train_valid_split(
    size: int,
    *,
    seed: int,
    valid_fraction: float | None = None,
    num_valid: int | None = None,
    num_train: int | None = None,
    source: str = "<training file>",
    first: np.ndarray | None = None,
    unit: str = "configurations",
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, valid)`` into a training file of ``size`` configurations.

    Args:
        size: the number of configurations in the training file.
        seed: the shuffle seed (``data.seed``).
        valid_fraction: fraction held out for validation (used when ``num_valid`` is None).
        num_valid: number held out for validation.
        num_train: number kept for training (default: all that remain).
        source: the file, for messages.
        first: ``[size]`` the position of each configuration's first identical copy
            (:func:`macelab.data.duplicates.first_occurrences`); copies stay together.
        unit: what the sizes count, for messages.
    """
    if first is not None:
        distinct = np.flatnonzero(first == np.arange(size))
        if distinct.size < size:
            train, valid = train_valid_split(
                int(distinct.size),
                seed=seed,
                valid_fraction=valid_fraction,
                num_valid=num_valid,
                num_train=num_train,
                source=source,
                unit=f"distinct structures (of {size} configurations)",
            )
            rank = np.searchsorted(distinct, first)  # each configuration's distinct structure
            return np.flatnonzero(np.isin(rank, train)), np.flatnonzero(np.isin(rank, valid))
    if num_valid is None:
        if valid_fraction is None or not 0.0 <= float(valid_fraction) < 1.0:
            raise ConfigError(
                f"data.valid_fraction={valid_fraction!r} must be in [0, 1) when no "
                "data.valid_file or data.num_valid is given."
            )
        num_valid = int(float(valid_fraction) * size)
        asked = f"data.valid_fraction={valid_fraction}"
    else:
        asked = f"data.num_valid={num_valid}"
    if num_valid < 0 or (num_train is not None and num_train < 0):
        raise ConfigError("data.num_train and data.num_valid cannot be negative.")
    check_not_empty(num_valid, split="validation", source=source, how=f"{size} {unit}")
    if num_valid >= size:
        raise ConfigError(
            f"{asked} holds out {num_valid} configurations for validation, but {source} holds "
            f"only {size} {unit}, which leaves none for training; lower it, or give the "
            "validation set as data.valid_file."
        )
    remaining = size - num_valid
    if num_train is None:
        num_train = remaining
    if num_train > remaining:
        raise ConfigError(
            f"data.num_train={num_train} asks for more training configurations than {source} "
            f"holds: it has {size} {unit}, of which {num_valid} are held out for validation "
            f"({asked}), leaving {remaining}. Set data.num_train to at most {remaining} (or "
            "null for all of them)."
        )
    check_not_empty(num_train, split="training", source=source, how=f"{size} {unit}")
    order = np.random.default_rng(seed).permutation(size)
    return np.sort(order[:num_train]), np.sort(order[remaining:])
