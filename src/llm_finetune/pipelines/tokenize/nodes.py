"""Nodes of the ``tokenize`` pipeline: tokenize + pack a split (cached by its settings), preview the masks."""

from __future__ import annotations

import logging
from pathlib import Path

from llm_finetune.models.loading import load_tokenizer
from llm_finetune.tokens.conversations import token_stats, tokenize_records
from llm_finetune.tokens.packing import pack_rows, padding_stats
from llm_finetune.tokens.preview import length_histogram, mask_preview_html
from llm_finetune.tokens.settings import settings_from_params
from llm_finetune.tokens.store import cache_key, cached, load_rows, load_side_files, store
from llm_finetune.training.settings import train_settings

logger = logging.getLogger(__name__)


def tokenize_train_split(records: list[dict], base_model: Path, params: dict, train_params: dict,
                         cache_dir: Path) -> tuple[Path, list[dict], dict]:
    """:func:`tokenize_split` for training: ``train.max_train_rows`` keeps the first N tokenized samples,
    before packing (a cap on packed bins would count bins, longest first under ``bfd``); the stats
    say how many of how many (``rows_available`` / ``rows_used``)."""
    return tokenize_split(records, base_model, params, train_params, cache_dir, capped=True)


def tokenize_split(records: list[dict], base_model: Path, params: dict, train_params: dict,
                   cache_dir: Path, capped: bool = False) -> tuple[Path, list[dict], dict]:
    """Tokenize and pack one split (``tokenize.*``), reusing the cached result of identical settings.

    Returns the tokenized folder (Arrow rows + quarantine + stats), the quarantined rows and
    the statistics: tokens, trained tokens, truncation, pad fraction, packing efficiency.
    """
    tokenizer = load_tokenizer(base_model)
    settings, key_settings = settings_from_params(params, tokenizer)
    train = train_settings(train_params, "train")
    cap = train.max_train_rows if capped else None
    key = cache_key(records, base_model, key_settings | ({"max_train_rows": cap} if capped else {}))
    folder = cached(cache_dir, key)
    if folder is not None:
        quarantined, stats = load_side_files(folder)
        logger.info("Reusing tokenized split %s (same records, tokenizer and settings)", key)
        return folder, quarantined, stats | {"reused": True}
    rows, quarantined = tokenize_records(records, settings, tokenizer)
    rows, cap_record = train.capped(rows, "train", "samples") if capped else (rows, {})
    packed = pack_rows(rows, params["packing"], settings.cutoff_len)
    stats = token_stats(rows, quarantined) | cap_record | {"packing": params["packing"], "training_rows": len(packed),
                                                           "cache_key": key}
    # the pad fraction of the batches training will see (batch_size auto: of its smallest candidate)
    batch_size = train.batch_size if train.batch_size != "auto" else min(train.auto_batch.candidates)
    stats |= padding_stats([len(r["input_ids"]) for r in packed], batch_size, settings.cutoff_len)
    stats["pad_fraction_batch_size"] = batch_size
    logger.info("Tokenized %s", {k: v for k, v in stats.items() if k != "quarantined_by_reason"})
    return store(cache_dir, key, packed, quarantined, stats), quarantined, stats | {"reused": False}


def preview_masks(train_tokens: Path, base_model: Path, params: dict):
    """An HTML page of the first ``tokenize.preview_rows`` training rows (trained tokens highlighted)
    and a histogram of sample lengths."""
    tokenizer = load_tokenizer(base_model)
    dataset = load_rows(train_tokens)
    head = dataset.select(range(min(params.get("preview_rows", 8), len(dataset)))).to_list()
    title = (f"Training tokens: template {params['template']}, loss_on {params['loss_on']}, "
             f"packing {params['packing']}, cutoff_len {params['cutoff_len']}")
    if "sample_lengths" in dataset.column_names:
        lengths = [n for row in dataset["sample_lengths"] for n in row]
    else:
        lengths = [len(ids) for ids in dataset["input_ids"]]
    return (mask_preview_html(head, tokenizer, title, len(head)),
            length_histogram(lengths, params["cutoff_len"], "Training sample lengths"))
