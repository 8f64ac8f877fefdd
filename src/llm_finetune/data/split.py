"""Deterministic, stable train / validation / test splits.

Modes:

* ``hash`` (default): a row's split follows from a seeded SHA-256 of its content (the
  record without ``meta``), mapped to [0, 1) and cut at the fractions. Adding or removing
  rows never moves another row between splits, and identical rows always share a split.
* ``ordered``: the book's split, row for row: the first 85 % train, the next 10 % test, the
  rest validation (935 / 110 / 55 of its 1,100 rows).
* ``shuffle``: a seeded shuffle, then the ordered cut (exact sizes, but adding a row
  reshuffles everything).
"""

from __future__ import annotations

import hashlib
import json
import random

MODES = ("hash", "ordered", "shuffle")
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False)  # one encoder, not one per row


def content_key(record: dict) -> str:
    """The record's content as canonical JSON (``meta`` excluded: it holds row numbers)."""
    return _CANONICAL.encode({k: v for k, v in record.items() if k != "meta"})


def hash_fraction(record: dict, seed: int) -> float:
    """A number in [0, 1) fixed by the record's content and the seed."""
    digest = hashlib.sha256(f"{seed}\x00{content_key(record)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_records(records: list[dict], train_fraction: float, test_fraction: float, seed: int,
                  mode: str = "hash") -> tuple[list[dict], list[dict], list[dict]]:
    """Return ``(train, val, test)``; validation gets what train and test leave."""
    if not 0 < train_fraction < 1 or not 0 < test_fraction < 1 or train_fraction + test_fraction >= 1:
        raise ValueError(f"Bad split fractions: train={train_fraction}, test={test_fraction} (need sum < 1)")
    if mode not in MODES:
        raise ValueError(f"data.split.mode {mode!r} is not one of {MODES}")
    if mode == "hash":
        train, val, test = [], [], []
        for record in records:
            value = hash_fraction(record, seed)
            (train if value < train_fraction else test if value < train_fraction + test_fraction else val).append(record)
    else:
        rows = list(records)
        if mode == "shuffle":
            random.Random(seed).shuffle(rows)
        n_train, n_test = int(len(rows) * train_fraction), int(len(rows) * test_fraction)
        train, test, val = rows[:n_train], rows[n_train:n_train + n_test], rows[n_train + n_test:]
    if not train or not val or not test:
        raise ValueError(f"{len(records)} rows are too few for a {train_fraction}/{test_fraction} split "
                         f"(mode {mode}: {len(train)}/{len(val)}/{len(test)} train/val/test)"
                         + ("; small data splits exactly with data.split.mode: ordered" if mode == "hash" else ""))
    return train, val, test
