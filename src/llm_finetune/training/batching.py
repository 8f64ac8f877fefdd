"""Length-grouped batches in random order.

transformers' ``LengthGroupedSampler`` sorts each mega-batch (50 batches) from the longest row
to the shortest and walks through it in that order, so every run of 50 steps is a long-to-short
curriculum, and a short run sees only the longest rows of its first mega-batch. On the book's
data, 30 steps at a constant learning rate ended at val loss 1.00 that way against 0.86 with
random batches. Here rows are shuffled, grouped by length within mega-batches (padding stays as
low), and then the *batches* are shuffled, seeded by ``seed`` and the epoch (so a resumed run
sees the same order). Hand-written: no library sampler shuffles the grouped batches.
"""

from __future__ import annotations

import torch


class ShuffledLengthGroupedSampler(torch.utils.data.Sampler):
    """Row indices whose consecutive ``batch_size`` blocks have similar lengths, blocks in random order."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, mega_batches: int = 50):
        self.lengths, self.batch_size, self.seed, self.mega_batches = list(lengths), batch_size, seed, mega_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.batch_size * self.mega_batches
        batches = []
        for start in range(0, len(order), size):
            group = sorted(order[start:start + size], key=lambda i: -self.lengths[i])
            batches += [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        partial = [b for b in batches if len(b) < self.batch_size]  # at most one: it stays last
        shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        return iter([index for batch in shuffled + partial for index in batch])


class SeededShuffle(torch.utils.data.Sampler):
    """Row indices in a random order seeded by ``seed`` and the epoch (a wrapped sampler's order must not
    hang on the global RNG, which a resumed run restores only later)."""

    def __init__(self, rows: int, seed: int):
        self.rows, self.seed, self.epoch = rows, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.rows

    def __iter__(self):
        return iter(torch.randperm(self.rows, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())


class RepeatedBatches(torch.utils.data.Sampler):
    """``sampler``'s indices in blocks of ``block`` (one optimiser step's rows over all ranks and accumulation
    steps), each block yielded ``repeats`` times in a row: GRPO's ``num_iterations`` policy updates on one
    generation batch. Epoch seeding is ``sampler``'s, so a resumed run sees the same blocks."""

    def __init__(self, sampler, block: int, repeats: int):
        self.sampler, self.block, self.repeats = sampler, block, repeats

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) * self.repeats

    def __iter__(self):
        order = list(self.sampler)
        for start in range(0, len(order), self.block):
            for _ in range(self.repeats):
                yield from order[start:start + self.block]
