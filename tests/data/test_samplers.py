"""DDP samplers: evaluation covers every sample once; training resumes exactly."""

from __future__ import annotations

from collections import Counter

import pytest

from macelab.data.samplers import EvalSampler, ResumableTrainSampler


@pytest.mark.parametrize("num_samples", [0, 1, 7, 15, 16, 650])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_eval_sampler_covers_each_index_exactly_once(num_samples, world_size):
    seen = Counter()
    for rank in range(world_size):
        sampler = EvalSampler(num_samples, rank=rank, world_size=world_size)
        indices = list(sampler)
        assert len(indices) == len(sampler)
        seen.update(indices)
    assert seen == Counter(range(num_samples))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_train_sampler_ranks_are_equal_length_and_cover_the_set(world_size):
    samplers = [
        ResumableTrainSampler(10, seed=5, rank=r, world_size=world_size) for r in range(world_size)
    ]
    per_rank = [list(s) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1  # equal steps on every rank
    union = [i for p in per_rank for i in p]
    assert set(union) == set(range(10))
    assert len(union) - 10 == (-10) % world_size  # only the wrap-around padding repeats


def test_train_sampler_is_seeded_and_epoch_dependent():
    a = ResumableTrainSampler(50, seed=1)
    b = ResumableTrainSampler(50, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(50))
    assert list(ResumableTrainSampler(50, seed=2)) != first


def test_train_sampler_skip_resumes_mid_epoch_once():
    sampler = ResumableTrainSampler(23, seed=3, rank=1, world_size=2)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.skip(5)
    assert len(sampler) == len(full)  # Lightning counts the resumed epoch against its full length
    assert list(sampler) == full[5:]  # continues exactly where the interrupted run stopped
    assert list(sampler) == full  # the skip applies to one pass only
