"""Deterministic train / validation / test split in the book's proportions.

The book takes the first 85 % as train, the next 10 % as test and the rest (5 %) as
validation: 935 / 110 / 55 of its 1,100 rows. We do the same, after a seeded shuffle
unless ``shuffle`` is false (which reproduces the book's split row for row).
"""

from __future__ import annotations

import random


def split_records(records: list[dict], train_fraction: float, test_fraction: float, seed: int,
                  shuffle: bool = True) -> tuple[list[dict], list[dict], list[dict]]:
    """Return ``(train, val, test)``; validation gets what train and test leave."""
    if not 0 < train_fraction < 1 or not 0 < test_fraction < 1 or train_fraction + test_fraction >= 1:
        raise ValueError(f"Bad split fractions: train={train_fraction}, test={test_fraction} (need sum < 1)")
    rows = list(records)
    if shuffle:
        random.Random(seed).shuffle(rows)
    n_train = int(len(rows) * train_fraction)
    n_test = int(len(rows) * test_fraction)
    train, test, val = rows[:n_train], rows[n_train:n_train + n_test], rows[n_train + n_test:]
    if not train or not val or not test:
        raise ValueError(f"{len(rows)} rows are too few for a {train_fraction}/{test_fraction} split")
    return train, val, test
