"""Pack tokenized rows into training rows, and collate them into batches.

* ``none``: one sample per row, padded to the longest in its batch (with length grouping
  in training, a strong baseline on CPU);
* ``greedy``: samples in order, each into the current row while it fits (next fit);
* ``bfd``: best-fit decreasing: longest first, each into the fullest row it still fits.

Packed rows are never longer than ``cutoff_len`` and carry ``position_ids`` that restart at
every sample; training passes them without an attention mask, so transformers builds a
block-diagonal causal mask from the position ids and a sample never attends to another. The
first token of every sample gets label -100: alone it is never a target (nothing precedes
it), so packed it must not be predicted from the previous sample either. Loss and logits of
a sample are then the same packed or alone.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

import torch

from llm_finetune.tokens.conversations import IGNORE_INDEX

PACKING = ("none", "greedy", "bfd")


def pack_rows(rows: list[dict], mode: str, capacity: int) -> list[dict]:
    """Training rows: ``input_ids``, ``labels`` and (packed) ``position_ids`` and ``sample_lengths``."""
    if mode not in PACKING:
        raise ValueError(f"tokenize.packing {mode!r} is not one of {PACKING}")
    if mode == "none":
        return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    too_long = [len(r["input_ids"]) for r in rows if len(r["input_ids"]) > capacity]
    if too_long:
        raise ValueError(f"{len(too_long)} rows are longer than the packing capacity {capacity}")
    bins = _greedy_bins(rows, capacity) if mode == "greedy" else _best_fit_decreasing(rows, capacity)
    return [_merge([rows[i] for i in members]) for members in bins]


def _greedy_bins(rows: list[dict], capacity: int) -> list[list[int]]:
    bins, used = [], capacity + 1
    for index, row in enumerate(rows):
        length = len(row["input_ids"])
        if used + length > capacity:
            bins.append([])
            used = 0
        bins[-1].append(index)
        used += length
    return bins


def _best_fit_decreasing(rows: list[dict], capacity: int) -> list[list[int]]:
    """O(n log n): open bins kept sorted by free space; each sample goes to the tightest that fits."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]["input_ids"]), i))
    free: list[tuple[int, int]] = []  # (free space, bin index), sorted
    bins: list[list[int]] = []
    for index in order:
        length = len(rows[index]["input_ids"])
        position = bisect.bisect_left(free, (length, -1))
        if position == len(free):
            bins.append([index])
            bisect.insort(free, (capacity - length, len(bins) - 1))
            continue
        space, number = free.pop(position)
        bins[number].append(index)
        bisect.insort(free, (space - length, number))
    return [sorted(members) for members in bins]


def _merge(samples: list[dict]) -> dict:
    input_ids, labels, positions, lengths = [], [], [], []
    for sample in samples:
        n = len(sample["input_ids"])
        input_ids += sample["input_ids"]
        labels += [IGNORE_INDEX] + list(sample["labels"][1:])
        positions += list(range(n))
        lengths.append(n)
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions, "sample_lengths": lengths}


def padding_stats(lengths: list[int], batch_size: int, capacity: int, seed: int = 0) -> dict:
    """Pad fraction of batches in random order and in length-grouped order, and packing efficiency."""
    if not lengths:
        return {"pad_fraction": 0.0, "pad_fraction_length_grouped": 0.0, "packing_efficiency": 0.0}
    shuffled = list(lengths)
    random.Random(seed).shuffle(shuffled)
    return {"pad_fraction": round(_pad_fraction(shuffled, batch_size), 4),
            "pad_fraction_length_grouped": round(_pad_fraction(_length_grouped(shuffled, batch_size), batch_size), 4),
            "packing_efficiency": round(sum(lengths) / (len(lengths) * capacity), 4)}


def _pad_fraction(lengths: list[int], batch_size: int) -> float:
    padded = sum(max(lengths[i:i + batch_size]) * len(lengths[i:i + batch_size])
                 for i in range(0, len(lengths), batch_size))
    return 1 - sum(lengths) / padded


def _length_grouped(lengths: list[int], batch_size: int, mega: int = 50) -> list[int]:
    """Length-grouped batches as training forms them (sorted within mega-batches of 50 batches; order aside)."""
    size = batch_size * mega
    return [n for start in range(0, len(lengths), size) for n in sorted(lengths[start:start + size], reverse=True)]


@dataclass
class PadCollator:
    """Right-pad ``input_ids`` with the pad id and ``labels`` with -100 (by position, never by pad id).

    Packed rows (with ``position_ids``) get no attention mask: padding continues as its own
    block of positions, so the block-diagonal mask keeps it apart from the samples. They also
    get ``use_cache=False``: transformers only derives the block mask when there is no cache.
    ``attention_mask=False`` leaves the mask out of unpacked batches too: right padding comes
    after every real token, so a causal model never lets a pad position change a real one, and
    attention runs on its fast causal path (training, where pad labels are -100 anyway).
    """

    pad_token_id: int
    attention_mask: bool = True

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        pads = [width - len(r["input_ids"]) for r in rows]
        batch = {
            "input_ids": torch.tensor([list(r["input_ids"]) + [self.pad_token_id] * p for r, p in zip(rows, pads)]),
            "labels": torch.tensor([list(r["labels"]) + [IGNORE_INDEX] * p for r, p in zip(rows, pads)]),
        }
        if rows[0].get("position_ids") is not None:
            batch["position_ids"] = torch.tensor([list(r["position_ids"]) + list(range(p)) for r, p in zip(rows, pads)])
            batch["use_cache"] = False
        elif self.attention_mask:
            batch["attention_mask"] = torch.tensor([[1] * len(r["input_ids"]) + [0] * p for r, p in zip(rows, pads)])
        return batch


@dataclass
class FlatteningCollator:
    """The rows of a batch laid end to end as one row of shape ``(1, total tokens)``: no padding, no mask,
    ``position_ids`` restarting at every sample (the row's own, or ``0..n-1`` for an unpacked row).

    For ``attention: flash_attention_2``: transformers gives FlashAttention-2 the sample boundaries
    (``cu_seqlens``, its variable-length kernel) from the position ids only in a batch of one row;
    with more rows and no mask, packed samples would attend to each other. Flattened, every sample
    attends only to itself, exactly as alone, and no compute goes to padding. Each sample's first
    token is never a target (nothing of its own precedes it), so the previous sample never predicts it.
    """

    def __call__(self, rows: list[dict]) -> dict:
        input_ids, labels, positions = [], [], []
        for row in rows:
            row_positions = list(row.get("position_ids") or range(len(row["input_ids"])))
            input_ids += list(row["input_ids"])
            positions += row_positions
            labels += [IGNORE_INDEX if position == 0 else label for label, position in zip(row["labels"],
                                                                                          row_positions)]
        return {"input_ids": torch.tensor([input_ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([positions]), "use_cache": False}


def in_length_order(items: list, lengths: list[int], batch_size: int, score_batch) -> list:
    """``score_batch`` over batches of ``items`` sorted by length; one result per item, in input order.

    The one length-sorted inference loop: reference log-probs, reward scores, pair evaluation
    and held-out perplexity all batch through it, so similar lengths share a batch (little
    padding) and every result lands back at its item's index.
    """
    if len(lengths) != len(items):
        raise ValueError(f"{len(items)} items but {len(lengths)} lengths")
    order = sorted(range(len(items)), key=lambda i: lengths[i])
    results: list = [None] * len(items)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        scored = list(score_batch([items[i] for i in indices]))
        if len(scored) != len(indices):
            raise ValueError(f"score_batch returned {len(scored)} results for {len(indices)} items")
        for index, result in zip(indices, scored):
            results[index] = result
    return results
