"""A local transformers causal LM as judge: the same prompt and score parsing as the HTTP judge.

The judge prompt is sent as a single user turn through the judge's chat template when it
has one (instruct models), as plain text otherwise; replies are generated greedily in
batches and parsed with :func:`~llm_finetune.evaluation.judging.llm_judge.parse_score`. Results have
the HTTP judge's shape (``score``, ``raw``, ``error``, ``attempts``), so summaries and
reports treat both alike.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from llm_finetune.evaluation.judging.llm_judge import BOOK_PROMPT, fill_prompt, parse_score
from llm_finetune.tokens.conversations import sequence_prefix, with_sequence_prefix

logger = logging.getLogger(__name__)


def judge_with_local_model(records: list[dict], folder: Path, prompt_template: str = BOOK_PROMPT,
                           batch_size: int = 8, max_new_tokens: int = 16, dtype: torch.dtype = torch.float32) -> list[dict]:
    """Score ``records`` (``prompt_input``, ``reference``, ``response``) with the model in ``folder``."""
    from llm_finetune.evaluation.generation import Decoding, generate_from_ids
    from llm_finetune.models.loading import load_causal_lm, load_tokenizer

    model = load_causal_lm(folder, dtype=dtype)
    tokenizer = load_tokenizer(folder, padding_side="left")
    encoded = [encode_judge_prompt(tokenizer, fill_prompt(prompt_template, record)) for record in records]
    replies, timing = generate_from_ids(model, tokenizer, encoded, batch_size, Decoding(max_new_tokens=max_new_tokens))
    logger.info("Local judge %s: %d replies in %.1f s", Path(folder).name, len(replies), timing["seconds"])
    return [{"score": parse_score(reply), "raw": reply, "error": None, "attempts": 1} for reply in replies]


def encode_judge_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of the judge prompt: chat-templated when the tokenizer has a template."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        return with_sequence_prefix(ids, sequence_prefix(tokenizer))
    return tokenizer(prompt).input_ids
