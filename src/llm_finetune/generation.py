"""Batched, left-padded, greedy generation with the KV cache.

Prompts are encoded by :func:`llm_finetune.tokenization.encode_prompt`, the same function
training used, and sorted by length so each batch pads little; outputs come back in the
input order.
"""

from __future__ import annotations

import logging
import time

import torch
from tqdm.auto import tqdm

from llm_finetune.tokenization import encode_prompt

logger = logging.getLogger(__name__)


def generate_responses(model, tokenizer, records: list[dict], template: str, batch_size: int,
                       max_new_tokens: int) -> tuple[list[str], dict]:
    """Greedy responses for ``records``; returns ``(responses, timing)``."""
    encoded = [encode_prompt(record, template, tokenizer) for record in records]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    responses: list[str] = [""] * len(encoded)
    pad_id = tokenizer.pad_token_id
    model.eval()
    started, new_tokens = time.perf_counter(), 0
    for start in tqdm(range(0, len(order), batch_size), desc="generate", unit="batch"):
        batch = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.tensor([[pad_id] * (width - len(encoded[i])) + encoded[i] for i in batch])
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in batch])
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                 eos_token_id=tokenizer.eos_token_id)
        for row, index in enumerate(batch):
            generated = out[row, width:]
            new_tokens += int((generated != pad_id).sum())
            responses[index] = tokenizer.decode(generated, skip_special_tokens=True).strip()
    seconds = time.perf_counter() - started
    timing = {"seconds": round(seconds, 2), "rows": len(records), "new_tokens": new_tokens,
              "tokens_per_s": round(new_tokens / seconds, 1) if seconds else None}
    logger.info("Generated %d responses in %.1f s (%s new tokens/s)", len(records), seconds, timing["tokens_per_s"])
    return responses, timing
