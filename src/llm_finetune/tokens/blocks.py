"""Continued pretraining on raw text: fixed-size token blocks and held-out perplexity.

Blocks. Every document is tokenized on its own (one batched call of the tokenizer, no special
tokens), gets the tokenizer's BOS in front when the tokenizer adds one, and always gets EOS at
the end, so the model learns where a document stops. The documents of a split are concatenated
in order and cut into blocks of exactly ``block_size`` tokens; ``labels`` equal ``input_ids``
(the model shifts them: every token but a block's first is a target). The tail shorter than a
block (the remainder) follows ``remainder``:

* ``drop`` (default, as LLaMA-Factory's ``pt`` stage and transformers' ``run_clm`` do): the
  remainder is left out and counted as ``dropped_tokens``;
* ``pad``: the remainder is kept as a last, shorter block; batches pad it with label -100, and
  the pad positions are counted as ``padded_tokens``. A remainder of one token has no target
  and is dropped in both modes.

``cross_document_attention: true`` (default) lets a document attend to the ones before it in the
same block, EOS between them, as pretraining usually does. ``false`` gives every document piece
its own ``position_ids`` (restarting at 0) and makes its first token no target: transformers then
builds a block-diagonal mask, so no document sees another (one small dense mask per block).

Perplexity on the held-out blocks is computed by
:func:`llm_finetune.training.objectives.language_model.perplexity`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llm_finetune.tokens.conversations import IGNORE_INDEX, sequence_prefix

REMAINDER = ("drop", "pad")


@dataclass(frozen=True)
class BlockSettings:
    """How text becomes training blocks (``pt.block_size``, ``pt.remainder``, ``pt.cross_document_attention``)."""

    block_size: int
    remainder: str = "drop"
    cross_document_attention: bool = True

    def __post_init__(self):
        if not isinstance(self.block_size, int) or self.block_size < 2:
            raise ValueError(f"pt.block_size must be an integer of at least 2, got {self.block_size!r}")
        if self.remainder not in REMAINDER:
            raise ValueError(f"pt.remainder {self.remainder!r} is not one of {REMAINDER}")

    @classmethod
    def from_params(cls, params: dict) -> BlockSettings:
        return cls(block_size=params["block_size"], remainder=params.get("remainder", "drop"),
                   cross_document_attention=bool(params.get("cross_document_attention", True)))

    def as_dict(self) -> dict:
        return asdict(self)


def check_block_settings(params: dict, max_positions: int | None = None) -> BlockSettings:
    """The ``pt`` block settings, checked against the model's positions."""
    settings = BlockSettings.from_params(params)
    if max_positions is not None and settings.block_size > max_positions:
        raise ValueError(f"pt.block_size {settings.block_size} exceeds the model's {max_positions} positions")
    return settings


def document_ids(texts: list[str], tokenizer) -> list[list[int]]:
    """Token ids of each document: the tokenizer's :func:`sequence_prefix` (its BOS, when it adds one) +
    text + ``EOS``, the same prefix a chat sequence gets."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("pretraining needs a tokenizer with an EOS token to mark where documents end")
    head = sequence_prefix(tokenizer)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [head + list(ids) + [eos] for ids in encoded]


def make_blocks(documents: list[list[int]], settings: BlockSettings) -> tuple[list[dict], dict]:
    """Concatenate the documents and cut them into blocks; returns ``(rows, stats)`` (module docstring)."""
    size = settings.block_size
    stream = [token for ids in documents for token in ids]
    starts = _document_starts(documents)
    full = len(stream) // size
    tail = len(stream) - full * size
    keep_tail = settings.remainder == "pad" and tail >= 2
    spans = [(i * size, (i + 1) * size) for i in range(full)] + ([(full * size, len(stream))] if keep_tail else [])
    rows = [_block(stream[a:b], [s - a for s in starts if a <= s < b], settings.cross_document_attention)
            for a, b in spans]
    stats = {"documents": len(documents), "tokens": len(stream), "blocks": len(rows), "full_blocks": full,
             "block_size": size, "remainder": settings.remainder, "dropped_tokens": 0 if keep_tail else tail,
             "padded_tokens": size - tail if keep_tail else 0,
             "trained_tokens": sum(sum(label != IGNORE_INDEX for label in r["labels"][1:]) for r in rows),
             "cross_document_attention": settings.cross_document_attention}
    return rows, stats


def _document_starts(documents: list[list[int]]) -> list[int]:
    starts, offset = [], 0
    for ids in documents:
        starts.append(offset)
        offset += len(ids)
    return starts


def _block(ids: list[int], doc_starts: list[int], cross_document: bool) -> dict:
    """One training row; without cross-document attention, positions restart at every document piece."""
    if cross_document:
        return {"input_ids": ids, "labels": list(ids)}
    starts = sorted({0, *doc_starts})
    positions, labels = [], list(ids)
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(ids)
        positions += range(end - start)
        labels[start] = IGNORE_INDEX
    return {"input_ids": ids, "labels": labels, "position_ids": positions}
