"""Next-token prediction on tokenized rows: the objective of ``sft`` and of ``pt`` (continued pretraining).

The two stages differ in their data (chat rows with answer-only labels, or fixed-size text
blocks where every token but the first is a target), not in their maths, so they share one
objective: the summed cross-entropy at the trained positions
(:func:`llm_finetune.training.numerics.trained_token_loss`), divided by the trained tokens of the
whole accumulated batch (``num_items_in_batch``), which ``tests/training/test_engine_accumulation.py``
pins. Padding uses :class:`llm_finetune.tokens.packing.PadCollator` without an attention mask: labels
are padded with ``-100`` by position, never by comparing with the pad id (pad == EOS in SmolLM2, and
EOS must stay a target); packed rows keep their per-sample position ids.

Held-out perplexity (:func:`perplexity`) is ``exp(summed token loss / scored tokens)`` over all
rows: one token-level average (rows are not averaged), through the same gathered log-probs as
training and the one length-sorted inference loop, the same way for the base and the tuned model.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from llm_finetune.models.loading import load_causal_lm, load_tokenizer
from llm_finetune.models.precision import compute_context, resolve_precision
from llm_finetune.models.tuning import prepare_model
from llm_finetune.tokens.conversations import IGNORE_INDEX
from llm_finetune.tokens.packing import FlatteningCollator, PadCollator, in_length_order
from llm_finetune.training.numerics import sequence_logps, trained_token_loss
from llm_finetune.training.objectives import Objective

logger = logging.getLogger(__name__)
ROW_KEYS = ("input_ids", "labels", "position_ids")


class LanguageModelObjective(Objective):
    """LoRA / full / freeze training of a causal LM on rows with ``input_ids`` and ``labels``."""

    name = "language_model"

    def __init__(self, base_model: Path, flatten: bool = False):
        """``flatten``: batches as one row without padding (:class:`FlatteningCollator`), for FlashAttention-2."""
        self.base_model, self.flatten = Path(base_model), flatten
        self.pad_token_id = load_tokenizer(self.base_model).pad_token_id

    def build_model(self, settings, precision: str):
        return prepare_model(self.base_model, settings.method, settings.lora.model_dump(),
                             settings.freeze.model_dump(), precision, settings.gradient_checkpointing)

    def row(self, row: dict) -> dict:
        return {k: row[k] for k in ROW_KEYS if row.get(k) is not None}

    def length(self, row: dict) -> int:
        return len(row["input_ids"])

    def collate(self, rows: list[dict]) -> dict:
        if self.flatten:
            return FlatteningCollator()(rows)
        return PadCollator(self.pad_token_id, attention_mask=False)(rows)

    def loss(self, model, batch: dict, num_items_in_batch=None):
        if model.training and num_items_in_batch is None:
            raise RuntimeError("training needs the trained-token count of the accumulated batch")
        return trained_token_loss(model, batch, num_items_in_batch), {}

    def scaled_for_accumulation(self, model) -> bool:
        return True

    def summary(self, history: list[dict], train_rows: list[dict]) -> dict:
        trained = sum(sum(label != IGNORE_INDEX for label in row["labels"][1:]) for row in train_rows)
        return {"trained_tokens_per_epoch": trained}


def held_out_loss(model, rows: list[dict], batch_size: int, pad_token_id: int,
                  precision: str = "fp32") -> tuple[float, int]:
    """Summed token loss and target count of ``rows`` under ``model`` (eval mode, no gradients)."""
    collate = PadCollator(pad_token_id, attention_mask=False)
    device = next(model.parameters()).device
    model.eval()

    def score(batch_rows: list[dict]) -> list[tuple[float, int]]:
        batch = {k: v.to(device) for k, v in collate(batch_rows).items() if k != "use_cache"}
        with compute_context(model, precision):
            logps, counts = sequence_logps(model, batch)
        return list(zip((-logps).tolist(), counts.tolist()))

    with torch.inference_mode():
        scored = in_length_order(rows, [len(r["input_ids"]) for r in rows], batch_size, score)
    return float(sum(loss for loss, _ in scored)), int(sum(count for _, count in scored))


def perplexity_report(total: float, count: int) -> dict:
    """``{"loss", "perplexity", "scored_tokens"}`` from a summed token loss and its target count."""
    if count == 0:
        raise ValueError("no held-out token to score: the test split holds no block (lower pt.block_size)")
    loss = total / count
    return {"loss": round(loss, 6), "perplexity": round(math.exp(loss), 4), "scored_tokens": count}


def perplexity(base_model: Path, adapter: Path | None, rows: list[dict], batch_size: int, precision: str) -> dict:
    """Perplexity of the base model (``adapter=None``) or the trained one on ``rows``."""
    resolved = resolve_precision(precision)
    model = load_causal_lm(base_model, torch.bfloat16 if resolved == "bf16" else torch.float32, adapter=adapter)
    started = time.perf_counter()
    total, count = held_out_loss(model, rows, batch_size, load_tokenizer(base_model).pad_token_id, resolved)
    report = perplexity_report(total, count) | {"blocks": len(rows), "precision": resolved,
                                                "seconds": round(time.perf_counter() - started, 2)}
    logger.info("Perplexity of the %s model: %s", "trained" if adapter else "base", report)
    return report
