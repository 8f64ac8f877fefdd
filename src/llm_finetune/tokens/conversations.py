"""Tokenize canonical conversations into ``input_ids`` / ``labels`` with exact loss masks.

A record is rendered into prompt and answer pieces (:mod:`llm_finetune.tokens.templates`); each
piece is tokenized on its own, in one batched call of the fast tokenizer, and the pieces are
concatenated. Labels follow the pieces, never a search in token ids:

* ``loss_on: all``: every token is trained (the book's default);
* ``assistant``: every answer piece (answer text + the template's end marker);
* ``last_assistant``: only the final answer.

Generation encodes a prompt with :func:`encode_prompts`: the same pieces, so the tokens the
model is prompted with at inference are the tokens it was trained on. Pieces are tokenized without
special tokens (a piece is not a sequence), and each sequence then starts with what the tokenizer
puts in front of a sequence (:func:`sequence_prefix`: Llama's and Gemma's BOS, nothing for SmolLM2)
unless the template already wrote it: BOS exactly where the tokenizer adds it, once, in training,
generation and ``pt`` alike. Rows longer than
``cutoff_len`` follow ``truncation``: ``truncate_response`` (cut the end), ``truncate_oldest_turns``
(drop whole early exchanges, then cut the end) or ``drop``. A row that cannot be rendered, or
that is left with no trained token, is quarantined with its reason, never dropped silently.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from llm_finetune.tokens.templates import ChatTemplate, Piece, TemplateError, render_pieces

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100
LOSS_ON = ("all", "assistant", "last_assistant")
TRUNCATION = ("truncate_response", "truncate_oldest_turns", "drop")


@dataclass(frozen=True)
class TokenizeSettings:
    template: ChatTemplate | str
    cutoff_len: int
    loss_on: str = "assistant"
    truncation: str = "truncate_response"

    def __post_init__(self):
        if self.loss_on not in LOSS_ON:
            raise ValueError(f"tokenize.loss_on {self.loss_on!r} is not one of {LOSS_ON}")
        if self.truncation not in TRUNCATION:
            raise ValueError(f"tokenize.truncation {self.truncation!r} is not one of {TRUNCATION}")
        if self.cutoff_len < 2:
            raise ValueError(f"tokenize.cutoff_len must be at least 2, got {self.cutoff_len}")


def sequence_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts in front of every text it encodes: ``[BOS]`` for Llama- and
    Gemma-family tokenizers, ``[]`` for those that add nothing (SmolLM2, Qwen)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return list(full[:start])
    return []


def with_sequence_prefix(ids: list[int], prefix: list[int]) -> list[int]:
    """``ids`` starting with ``prefix``, added only when the rendered text did not already begin with it."""
    return list(ids) if not prefix or list(ids[:len(prefix)]) == prefix else list(prefix) + list(ids)


def encode_pieces(pieces_per_record: list[list[Piece]], tokenizer) -> list[list[list[int]]]:
    """Token ids of every piece, from one batched tokenizer call; each record's first piece starts with
    the tokenizer's :func:`sequence_prefix` (once: a template that renders BOS itself gets no second)."""
    texts = [piece.text for pieces in pieces_per_record for piece in pieces]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    prefix = sequence_prefix(tokenizer) if texts else []
    grouped, start = [], 0
    for pieces in pieces_per_record:
        record_ids = [list(piece_ids) for piece_ids in ids[start:start + len(pieces)]]
        if record_ids:
            record_ids[0] = with_sequence_prefix(record_ids[0], prefix)
        grouped.append(record_ids)
        start += len(pieces)
    return grouped


def encode_prompts(records: list[dict], template: ChatTemplate | str, tokenizer) -> list[list[int]]:
    """Generation prompts: the tokens of every piece before each record's last answer."""
    pieces = [render_pieces(record, template, tokenizer)[:-1] for record in records]
    return [[token for piece in piece_ids for token in piece] for piece_ids in encode_pieces(pieces, tokenizer)]


def assemble(piece_ids: list[list[int]], kinds: list[str], loss_on: str) -> tuple[list[int], list[int]]:
    """Concatenate pieces; label the trained ones with their ids and the rest with -100.

    An ``untrained`` piece (a turn with ``train: false``) is never trained, whatever ``loss_on``."""
    last_answer = max(i for i, kind in enumerate(kinds) if kind == "answer")
    input_ids, labels = [], []
    for index, (ids, kind) in enumerate(zip(piece_ids, kinds)):
        trained = kind != "untrained" and (
            loss_on == "all" or (kind == "answer" and (loss_on == "assistant" or index == last_answer)))
        input_ids += ids
        labels += list(ids) if trained else [IGNORE_INDEX] * len(ids)
    return input_ids, labels


def tokenize_records(records: list[dict], settings: TokenizeSettings, tokenizer) -> tuple[list[dict], list[dict]]:
    """Tokenize a split: ``(rows, quarantined)``; rows keep their source dataset / row."""
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no EOS token; set one in the model folder")
    rendered, quarantined = [], []
    for index, record in enumerate(records):
        try:
            rendered.append((index, render_pieces(record, settings.template, tokenizer)))
        except TemplateError as err:
            quarantined.append(_quarantine(index, record, "template cannot render the row", str(err)))
    encoded = encode_pieces([pieces for _, pieces in rendered], tokenizer)
    rows = []
    for (index, pieces), piece_ids in zip(rendered, encoded):
        record = records[index]
        row = _fit(record, pieces, piece_ids, settings, tokenizer)
        if "reason" in row:
            quarantined.append(_quarantine(index, record, row["reason"], row.get("detail", "")))
            continue
        meta = record.get("meta") or {}
        rows.append(row | {"source_row": meta.get("row", index), "dataset": meta.get("dataset")})
    return rows, quarantined


def _quarantine(index: int, record: dict, reason: str, detail: str) -> dict:
    meta = record.get("meta") or {}
    return {"row": index, "dataset": meta.get("dataset"), "source_row": meta.get("row"), "reason": reason,
            "detail": detail, "record": record}


def _fit(record: dict, pieces: list[Piece], piece_ids: list[list[int]], settings: TokenizeSettings,
         tokenizer) -> dict:
    """One row within ``cutoff_len`` by the truncation policy, or ``{"reason"}``."""
    kinds = [piece.kind for piece in pieces]
    input_ids, labels = assemble(piece_ids, kinds, settings.loss_on)
    length, cutoff = len(input_ids), settings.cutoff_len
    turns_dropped = 0
    if length > cutoff and settings.truncation == "drop":
        return {"reason": "longer than cutoff_len", "detail": f"{length} tokens > {cutoff}"}
    if length > cutoff and settings.truncation == "truncate_oldest_turns":
        input_ids, labels, turns_dropped = _drop_oldest_turns(record, settings, tokenizer, input_ids, labels)
    truncated = len(input_ids) > cutoff
    input_ids, labels = input_ids[:cutoff], labels[:cutoff]
    if all(label == IGNORE_INDEX for label in labels[1:]):
        return {"reason": "no trained tokens", "detail": f"{length} tokens, cutoff_len {cutoff}, "
                                                          f"loss_on {settings.loss_on}"}
    return {"input_ids": input_ids, "labels": labels, "length": len(input_ids),
            "truncated": truncated or turns_dropped > 0, "turns_dropped": turns_dropped}


def _drop_oldest_turns(record, settings, tokenizer, input_ids, labels):
    """Re-render without the earliest exchanges (system prompt kept) until the row fits."""
    messages = record["messages"]
    starts = [i for i, m in enumerate(messages) if i > 0 and m["role"] == "user"
              and messages[i - 1]["role"] in ("assistant", "function_call")]
    dropped = 0
    for start in starts:
        shorter = record | {"messages": messages[start:]}
        pieces = render_pieces(shorter, settings.template, tokenizer)
        input_ids, labels = assemble(encode_pieces([pieces], tokenizer)[0], [p.kind for p in pieces],
                                     settings.loss_on)
        dropped += 1
        if len(input_ids) <= settings.cutoff_len:
            break
    return input_ids, labels, dropped


def token_stats(rows: list[dict], quarantined: list[dict]) -> dict:
    """Counts for the report and MLflow: tokens, trained tokens, truncation, quarantine by reason."""
    lengths = [len(row["input_ids"]) for row in rows]
    return {
        "rows": len(rows),
        "quarantined": len(quarantined),
        "quarantined_by_reason": dict(Counter(item["reason"] for item in quarantined)),
        "truncated": sum(row["truncated"] for row in rows),
        "turns_dropped": sum(row.get("turns_dropped", 0) for row in rows),
        "tokens": sum(lengths),
        "trained_tokens": sum(sum(label != IGNORE_INDEX for label in row["labels"]) for row in rows),
        "max_length": max(lengths, default=0),
        "mean_length": round(sum(lengths) / len(lengths), 1) if lengths else 0,
    }
