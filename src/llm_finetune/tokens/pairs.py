"""Tokenize preference pairs (prompt, chosen, rejected) with the same templates and masks as SFT.

Each pair becomes two conversations, ``prompt + [chosen]`` and ``prompt + [rejected]``, tokenized
by :func:`llm_finetune.tokens.conversations.tokenize_records` with the loss on the last answer only: the
prompt tokens are identical on both sides, the labels mark exactly the answer tokens (and the
template's end-of-turn / EOS), and truncation and quarantine follow the ``tokenize.*`` rules.
A pair is quarantined when either side is (the reason names the side), never half-kept.

Rows: ``chosen_input_ids``, ``chosen_labels``, ``rejected_input_ids``, ``rejected_labels``,
``source_row``, ``dataset``. Reward models read the score at the last token of each side; DPO
sums the log-probs of the labelled tokens.
"""

from __future__ import annotations

from dataclasses import replace

from llm_finetune.tokens.conversations import TokenizeSettings, tokenize_records

SIDES = ("chosen", "rejected")


def pair_conversation(record: dict, side: str) -> dict:
    """The conversation ``prompt + [side's answer]`` of a preference record."""
    return {"messages": list(record["prompt"]) + [record[side]], "system": record.get("system"),
            "tools": record.get("tools"), "meta": record.get("meta") or {}}


def tokenize_pairs(records: list[dict], settings: TokenizeSettings, tokenizer) -> tuple[list[dict], list[dict]]:
    """``(rows, quarantined)`` for preference records (see the module docstring)."""
    settings = replace(settings, loss_on="last_assistant")
    sides = {}
    for side in SIDES:
        rows, quarantined = tokenize_records([pair_conversation(r, side) for r in records], settings, tokenizer)
        kept = iter(rows)
        lost = {q["row"]: q for q in quarantined}
        sides[side] = [None if index in lost else next(kept) for index in range(len(records))], lost
    pairs, quarantined = [], []
    for index, record in enumerate(records):
        problems = [(side, sides[side][1][index]) for side in SIDES if index in sides[side][1]]
        if problems:
            side, entry = problems[0]
            meta = record.get("meta") or {}
            quarantined.append({"row": index, "dataset": meta.get("dataset"), "source_row": meta.get("row"),
                                "reason": f"{side}: {entry['reason']}", "detail": entry["detail"], "record": record})
            continue
        chosen, rejected = sides["chosen"][0][index], sides["rejected"][0][index]
        pairs.append({"chosen_input_ids": chosen["input_ids"], "chosen_labels": chosen["labels"],
                      "rejected_input_ids": rejected["input_ids"], "rejected_labels": rejected["labels"],
                      "source_row": chosen["source_row"], "dataset": chosen["dataset"],
                      "truncated": chosen["truncated"] or rejected["truncated"]})
    return pairs, quarantined


def pair_length(pair: dict) -> int:
    """Tokens of a tokenized pair's longer side: what a batch of pairs pads to."""
    return max(len(pair["chosen_input_ids"]), len(pair["rejected_input_ids"]))
