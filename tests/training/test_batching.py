"""Length-grouped batches in random order: low padding without a long-to-short curriculum."""

import random

from llm_finetune.tokens.packing import _pad_fraction
from llm_finetune.training.batching import ShuffledLengthGroupedSampler


def lengths(n=203, seed=0):
    rng = random.Random(seed)
    return [rng.randint(10, 300) for _ in range(n)]


def batches(sampler, size):
    order = list(sampler)
    return [order[i:i + size] for i in range(0, len(order), size)]


def test_every_row_once_and_the_short_batch_last():
    sizes = lengths()
    out = batches(ShuffledLengthGroupedSampler(sizes, 8, seed=1, mega_batches=5), 8)
    assert sorted(i for b in out for i in b) == list(range(len(sizes)))
    assert all(len(b) == 8 for b in out[:-1]) and len(out[-1]) == len(sizes) % 8


def test_batches_pad_far_less_than_random_ones():
    sizes = lengths()
    grouped = [sizes[i] for i in ShuffledLengthGroupedSampler(sizes, 8, seed=1)]
    shuffled = random.Random(1).sample(sizes, len(sizes))
    assert _pad_fraction(grouped, 8) < _pad_fraction(shuffled, 8) / 3


def test_batch_order_is_random_not_longest_first():
    sizes = lengths(400)
    longest = [max(sizes[i] for i in b) for b in batches(ShuffledLengthGroupedSampler(sizes, 8, seed=1), 8)]
    assert longest != sorted(longest, reverse=True)
    first_half, second_half = longest[:25], longest[25:]
    assert max(first_half) > min(second_half) and min(first_half) < max(second_half)


def test_same_seed_and_epoch_same_order_other_epoch_other_order():
    sizes = lengths()
    a, b = ShuffledLengthGroupedSampler(sizes, 8, seed=3), ShuffledLengthGroupedSampler(sizes, 8, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(ShuffledLengthGroupedSampler(sizes, 8, seed=4)) != list(a)


def test_repeated_batches_yield_each_step_block_repeats_times_in_a_row():
    from llm_finetune.training.batching import RepeatedBatches, SeededShuffle

    shuffle = SeededShuffle(10, seed=3)
    order = list(shuffle)
    repeated = RepeatedBatches(shuffle, block=4, repeats=2)
    assert len(repeated) == 20
    assert list(repeated) == order[:4] * 2 + order[4:8] * 2 + order[8:] * 2
    assert sorted(order) == list(range(10)) and list(SeededShuffle(10, seed=3)) == order  # seeded, not global RNG
    repeated.set_epoch(1)
    assert list(shuffle) != order and sorted(shuffle) == list(range(10))  # the epoch reaches the wrapped sampler
