"""Seeded train/validation splits of one training file.

The rule is mace-torch's ``random_train_valid_split``: shuffle the indices with
``numpy.random.default_rng(seed)``, the validation set is the last ``int(valid_fraction * n)``
of them (or ``num_valid``), the training set the rest (or its first ``num_train``). The same
seed gives the same split on every machine and every rank.
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
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, valid)`` into a training file of ``size`` configurations.

    Args:
        size: the number of configurations in the training file.
        seed: the shuffle seed (``data.seed``).
        valid_fraction: fraction held out for validation (used when ``num_valid`` is None).
        num_valid: number held out for validation.
        num_train: number kept for training (default: all that remain).
        source: the file, for messages.
    """
    if num_valid is None:
        if valid_fraction is None or not 0.0 <= float(valid_fraction) < 1.0:
            raise ConfigError(
                f"data.valid_fraction={valid_fraction!r} must be in [0, 1) when no "
                "data.valid_file or data.num_valid is given."
            )
        num_valid = int(float(valid_fraction) * size)
    if num_valid < 0 or (num_train is not None and num_train < 0):
        raise ConfigError("data.num_train and data.num_valid cannot be negative.")
    check_not_empty(num_valid, split="validation", source=source, how=f"{size} configurations")
    remaining = size - num_valid
    if num_train is None:
        num_train = remaining
    if num_train > remaining:
        raise ConfigError(
            f"data.num_train={num_train} exceeds the {remaining} configurations of {source} "
            f"left after {num_valid} are held out for validation."
        )
    check_not_empty(num_train, split="training", source=source, how=f"{size} configurations")
    order = np.random.default_rng(seed).permutation(size)
    return np.sort(order[:num_train]), np.sort(order[remaining:])
