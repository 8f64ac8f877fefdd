"""Tokenize canonical records into ``input_ids`` / ``labels`` for causal-LM training.

Prompt and response are tokenized separately from their rendered texts (never found by
searching token ids), so the loss mask is exact: prompt tokens get ``-100`` when
``mask_prompt`` is on, and exactly one EOS closes the response as a trained target.
Rows that cannot be trained on (a prompt longer than ``cutoff_len``) are returned with a
reason instead of being dropped.
"""

from __future__ import annotations

import logging

from llm_finetune.templates import render_example, render_prompt

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100


def encode_prompt(record: dict, template: str, tokenizer) -> list[int]:
    """Token ids of the prompt, exactly as training saw them (used by generation too)."""
    text = render_prompt(record, template, tokenizer)
    return tokenizer(text, add_special_tokens=template == "alpaca").input_ids


def tokenize_record(record: dict, template: str, tokenizer, cutoff_len: int, mask_prompt: bool) -> dict:
    """Return ``{"input_ids", "labels", "truncated"}`` or ``{"reason"}`` for an unusable row."""
    prompt_text, response_text = render_example(record, template, tokenizer)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=template == "alpaca").input_ids
    response_ids = tokenizer(response_text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    if len(prompt_ids) >= cutoff_len:
        return {"reason": f"prompt has {len(prompt_ids)} tokens, cutoff_len is {cutoff_len}"}
    truncated = len(prompt_ids) + len(response_ids) > cutoff_len
    response_ids = response_ids[: cutoff_len - len(prompt_ids)]
    prompt_labels = [IGNORE_INDEX] * len(prompt_ids) if mask_prompt else list(prompt_ids)
    return {"input_ids": prompt_ids + response_ids, "labels": prompt_labels + response_ids, "truncated": truncated}


def tokenize_records(records: list[dict], template: str, tokenizer, cutoff_len: int,
                     mask_prompt: bool) -> tuple[list[dict], list[dict], dict]:
    """Tokenize a split: ``(rows, quarantined, stats)``."""
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no EOS token; set one in the model folder")
    rows, quarantined = [], []
    for index, record in enumerate(records):
        encoded = tokenize_record(record, template, tokenizer, cutoff_len, mask_prompt)
        if "reason" in encoded:
            quarantined.append({"row": index, "reason": encoded["reason"], "record": record})
        else:
            rows.append({"input_ids": encoded["input_ids"], "labels": encoded["labels"],
                         "truncated": encoded["truncated"], "source_row": record.get("meta", {}).get("row", index)})
    stats = {
        "rows": len(rows),
        "quarantined": len(quarantined),
        "truncated": sum(r["truncated"] for r in rows),
        "tokens": sum(len(r["input_ids"]) for r in rows),
        "trained_tokens": sum(sum(label != IGNORE_INDEX for label in r["labels"]) for r in rows),
        "max_length": max((len(r["input_ids"]) for r in rows), default=0),
    }
    logger.info("Tokenized %s", stats)
    return rows, quarantined, stats
