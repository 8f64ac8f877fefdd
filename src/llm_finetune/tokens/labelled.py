"""Tokenize labelled completions for KTO: one answer per prompt, desirable or not, plus its KL partner.

Inputs are canonical records of either kind:

* a conversation with a ``label`` (LLaMA-Factory's ``kto_tag``, kept by ``align``): its last answer
  is the completion, the label says whether it is desirable;
* a preference pair: two rows, ``prompt + chosen`` (desirable) and ``prompt + rejected``
  (undesirable), adjacent, both carrying the pair's index in ``pair`` (held-out pairwise accuracy).

Each row is tokenized by :func:`llm_finetune.tokens.conversations.tokenize_records` with the loss
on the last answer only, so the labels mark exactly the completion (and its end of turn). KTO's KL
term is estimated on mismatched (prompt, completion) rows: as TRL 1.16 does, the completions are
rotated by one within each consecutive group of ``group_size`` rows (the training batch), row ``i``
of a group getting the completion of row ``i - 1`` (the first the last's; a last group of one row
takes the row before it). :func:`with_kl_partners` does this after any cap, and training reads the
rows in order, so the KL completions of a batch are the batch's own completions. A row that cannot
be rendered or keeps no trained token is quarantined with its reason; a conversation without a
label is quarantined too (KTO cannot use it).

Rows: ``input_ids``, ``labels``, ``label``, ``kl_input_ids``, ``kl_labels``, ``pair`` (or None),
``source_row``, ``dataset``.
"""

from __future__ import annotations

from dataclasses import replace

from llm_finetune.tokens.conversations import IGNORE_INDEX, TokenizeSettings, tokenize_records
from llm_finetune.tokens.pairs import pair_conversation

NO_LABEL = "no KTO label"
ROW_KEYS = ("input_ids", "labels", "kl_input_ids", "kl_labels")


def labelled_conversations(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(conversations with label, pair and the index of their record, quarantined)``: pairs split in
    two, unlabelled rows set aside."""
    conversations, quarantined = [], []
    for index, record in enumerate(records):
        if "chosen" in record:
            conversations += [pair_conversation(record, side) | {"label": side == "chosen", "pair": index,
                                                                 "record_index": index}
                              for side in ("chosen", "rejected")]
        elif isinstance(record.get("label"), bool):
            conversations.append(record | {"pair": None, "record_index": index})
        else:
            meta = record.get("meta") or {}
            quarantined.append({"row": index, "dataset": meta.get("dataset"), "source_row": meta.get("row"),
                                "reason": NO_LABEL, "detail": "a kto row needs label true / false (kto_tag)",
                                "record": record})
    return conversations, quarantined


def tokenize_labelled(records: list[dict], settings: TokenizeSettings, tokenizer) -> tuple[list[dict], list[dict]]:
    """``(rows, quarantined)`` for KTO records (see the module docstring); KL partners come later."""
    conversations, quarantined = labelled_conversations(records)
    rows, lost = tokenize_records(conversations, replace(settings, loss_on="last_assistant"), tokenizer)
    # a quarantine entry names the row of the split it came from, not of the split-in-two conversations
    quarantined += [item | {"row": conversations[item["row"]]["record_index"]} for item in lost]
    kept = iter(rows)
    lost_rows = {item["row"] for item in lost}
    rows = [next(kept) | {"label": c["label"], "pair": c["pair"]}
            for index, c in enumerate(conversations) if index not in lost_rows]
    return rows, quarantined


def split_completion(row: dict) -> tuple[list[int], list[int]]:
    """``(prompt ids, completion ids)`` of a tokenized row: the completion is its labelled suffix."""
    start = next(i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX)
    return row["input_ids"][:start], row["input_ids"][start:]


def with_kl_partners(rows: list[dict], group_size: int, cutoff_len: int) -> list[dict]:
    """Each row with ``kl_input_ids`` / ``kl_labels``: its prompt and the previous row's completion in its group."""
    if group_size < 2 or len(rows) < 2:
        raise ValueError(f"the KTO KL estimate needs groups of at least 2 rows (batch_size {group_size}, "
                         f"{len(rows)} rows)")
    parts = [split_completion(row) for row in rows]
    out = []
    for start in range(0, len(rows), group_size):
        group = range(start, min(start + group_size, len(rows)))
        for index in group:
            partner = index - 1 if index > group.start or len(group) == 1 else group.stop - 1
            prompt, completion = parts[index][0], parts[partner][1]
            ids = (prompt + completion)[:cutoff_len]
            labels = ([IGNORE_INDEX] * len(prompt) + completion)[:cutoff_len]
            out.append(rows[index] | {"kl_input_ids": ids, "kl_labels": labels})
    return out


def labelled_length(row: dict) -> int:
    """Tokens of a row's longer sequence (itself or its KL partner)."""
    return max(len(row["input_ids"]), len(row["kl_input_ids"]))
