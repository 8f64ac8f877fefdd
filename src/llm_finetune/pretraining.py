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

Perplexity is ``exp(summed token loss / scored tokens)`` over all held-out blocks: one token-level
average (blocks are not averaged), computed by :func:`held_out_loss` the same way for the base
model and the trained one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llm_finetune.causal_loss import supports_trained_token_loss, trained_token_loss
from llm_finetune.models.loading import load_causal_lm, load_tokenizer, resolve_precision
from llm_finetune.packing import PadCollator
from llm_finetune.tokenization import IGNORE_INDEX
from llm_finetune.tuning_methods import METHODS

logger = logging.getLogger(__name__)
REMAINDER = ("drop", "pad")
REQUIRED_TRAIN_KEYS = ("method", "seed", "precision", "epochs", "batch_size", "gradient_accumulation_steps",
                       "learning_rate", "weight_decay", "lr_scheduler", "warmup_steps", "max_grad_norm",
                       "group_by_length", "eval_steps", "logging_steps", "lora")


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


def check_pt_params(params: dict, max_positions: int | None = None) -> BlockSettings:
    """Validate the ``pt`` parameters (block settings, training keys, method); returns the block settings."""
    settings = BlockSettings.from_params(params)
    if max_positions is not None and settings.block_size > max_positions:
        raise ValueError(f"pt.block_size {settings.block_size} exceeds the model's {max_positions} positions")
    train = params.get("train") or {}
    missing = [key for key in REQUIRED_TRAIN_KEYS if key not in train]
    if missing:
        raise ValueError(f"pt.train lacks: {', '.join(missing)} (see conf/base/parameters_pt.yml)")
    if train["method"] not in METHODS:
        raise ValueError(f"pt.train.method {train['method']!r} is not one of {METHODS}")
    if not train.get("max_steps") and train["epochs"] <= 0:
        raise ValueError("pt.train needs max_steps or a positive number of epochs")
    return settings


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts its BOS token in front of encoded text."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def document_ids(texts: list[str], tokenizer) -> list[list[int]]:
    """Token ids of each document: ``[BOS]`` (when the tokenizer adds one) + text + ``EOS``."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("pretraining needs a tokenizer with an EOS token to mark where documents end")
    head = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
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


def summed_token_loss(model, batch: dict) -> tuple[float, int]:
    """Sum of next-token cross-entropies over a batch's targets, and how many targets there were."""
    targets = batch["labels"][:, 1:]
    trained = targets != IGNORE_INDEX
    if supports_trained_token_loss(model):
        total = trained_token_loss(model, batch, num_items_in_batch=1)
    else:
        forward = {k: v for k, v in batch.items() if k in ("input_ids", "position_ids")}
        logits = model(**forward, use_cache=False).logits[:, :-1][trained].float()
        total = F.cross_entropy(logits, targets[trained], reduction="sum")
    return float(total), int(trained.sum())


def held_out_loss(model, rows: list[dict], batch_size: int, pad_token_id: int) -> tuple[float, int]:
    """Summed token loss and target count of ``rows`` under ``model`` (eval mode, no gradients)."""
    collate = PadCollator(pad_token_id, attention_mask=False)
    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in tqdm(range(0, len(rows), batch_size), desc="perplexity", unit="batch"):
            batch = {k: v.to(device) for k, v in collate(rows[start:start + batch_size]).items() if k != "use_cache"}
            loss, targets = summed_token_loss(model, batch)
            total, count = total + loss, count + targets
    return total, count


def perplexity_report(total: float, count: int) -> dict:
    """``{"loss", "perplexity", "scored_tokens"}`` from a summed token loss and its target count."""
    if count == 0:
        raise ValueError("no held-out token to score: the test split holds no block (lower pt.block_size)")
    loss = total / count
    return {"loss": round(loss, 6), "perplexity": round(math.exp(loss), 4), "scored_tokens": count}


def model_perplexity(base_model: Path, adapter: Path | None, rows: list[dict], batch_size: int,
                     precision: str) -> dict:
    """Perplexity of the base model (``adapter=None``) or the trained one on ``rows``."""
    resolved = resolve_precision(precision)
    model = load_causal_lm(base_model, torch.bfloat16 if resolved == "bf16" else torch.float32, adapter=adapter)
    started = time.perf_counter()
    total, count = held_out_loss(model, rows, batch_size, load_tokenizer(base_model).pad_token_id)
    seconds = time.perf_counter() - started
    report = perplexity_report(total, count) | {"blocks": len(rows), "precision": resolved,
                                                "seconds": round(seconds, 2)}
    logger.info("Perplexity of the %s model: %s", "trained" if adapter else "base", report)
    return report
