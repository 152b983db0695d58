"""Samplers that make training resumable mid-epoch and evaluation exact under DDP.

* :class:`ResumableTrainSampler` shuffles with a generator seeded by ``(seed, epoch)``, so
  the order of every epoch is a pure function of the seed. A resumed run tells it how many
  samples of the current epoch were already consumed (:meth:`skip`), and it continues from
  exactly there. Under DDP every rank gets the same number of samples (the permutation is
  padded by wrapping around, as ``torch.utils.data.DistributedSampler`` does), because
  gradient all-reduce needs every rank to take the same number of steps.
* :class:`EvalSampler` gives rank ``r`` of ``w`` the indices ``r, r + w, r + 2w, ...``:
  no padding and no duplicates, so metrics summed over ranks count every sample once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableTrainSampler(Sampler[int]):
    """A seeded, epoch-aware, rank-aware shuffle that can resume in the middle of an epoch."""

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("ResumableTrainSampler needs at least one sample")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._skip = 0

    @property
    def samples_per_rank(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch; selects that epoch's permutation."""
        self.epoch = int(epoch)

    def skip(self, num_consumed: int) -> None:
        """Start the next iteration after the first ``num_consumed`` samples of this rank.

        Applies to one iteration only; ``len()`` stays the full epoch (see ``__len__``).
        """
        self._skip = int(num_consumed)

    def epoch_indices(self) -> list[int]:
        """This rank's indices for the current epoch, before any skip."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.samples_per_rank * self.world_size
        order = (order * math.ceil(total / len(order)))[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices()[self._skip :]
        self._skip = 0
        return iter(indices)

    def __len__(self) -> int:
        """The whole epoch's share of this rank, even while a skip is pending.

        Lightning restores its batch counter on resume and counts the batches still to come
        against the epoch's full length (``done`` once ``batches_before + batches_after ==
        len(loader)``); a shortened length would end the resumed epoch early.
        """
        return self.samples_per_rank


class EvalSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...``: every sample on exactly one rank."""

    def __init__(self, num_samples: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.num_samples = num_samples
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))
