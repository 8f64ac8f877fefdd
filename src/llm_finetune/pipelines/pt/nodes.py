"""Nodes of the ``pt`` stage: text -> blocks -> perplexity before -> train -> perplexity after -> metrics.

The stage's front (data in the ``pt`` namespace, preflight, base model) is in ``pipelines/stages``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llm_finetune.evaluation.reporting import loss_curve
from llm_finetune.io import ModelBundle
from llm_finetune.models.loading import load_tokenizer, trusts_remote_code
from llm_finetune.provenance import checkpoint_key, package_versions, token_folder_key
from llm_finetune.tokens.blocks import check_block_settings, document_ids, make_blocks
from llm_finetune.tokens.store import cache_key, cached, load_rows, load_side_files, store
from llm_finetune.training.settings import train_settings

logger = logging.getLogger(__name__)
FORMAT = "pt-blocks-1"  # bump when the block layout changes, so old caches are not reused
SPLITS = ("train", "val", "test")


def pack_blocks(train_records: list[dict], val_records: list[dict], test_records: list[dict], base_model: Path,
                pt_params: dict, token_cache: Path) -> tuple[Path, Path, Path, dict]:
    """Tokenize the text splits and cut them into ``pt.block_size`` blocks, cached like ``tokenize``.

    Args:
        train_records, val_records, test_records: text records ``{"text", "meta"}``.
        pt_params: ``pt`` (``block_size``, ``remainder``, ``cross_document_attention``, ``train``).
        token_cache: folder of cached tokenized data, keyed by records, tokenizer and settings.
    Returns the three block folders (Arrow rows + stats) and ``{split: stats}``.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_model, trust_remote_code=trusts_remote_code(base_model))
    max_positions = getattr(config, "max_position_embeddings", None)
    settings = check_block_settings(pt_params, max_positions)
    tokenizer = load_tokenizer(base_model)
    folders, stats = [], {}
    for split, records in zip(SPLITS, (train_records, val_records, test_records)):
        key = cache_key(records, base_model, {"format": FORMAT} | settings.as_dict())
        folder = cached(token_cache, key)
        if folder is None:
            rows, split_stats = make_blocks(document_ids([r["text"] for r in records], tokenizer), settings)
            folder = store(token_cache, key, rows, [], split_stats | {"cache_key": key})
        split_stats = load_side_files(folder)[1]
        if not split_stats["blocks"]:
            raise ValueError(f"pt.{split}_records hold {split_stats['tokens']} tokens: no block of "
                             f"{settings.block_size}. Lower pt.block_size, set pt.remainder: pad, or add text.")
        logger.info("pt %s blocks: %s", split, split_stats)
        folders.append(folder)
        stats[split] = {k: v for k, v in split_stats.items() if k != "cache_key"}
    return folders[0], folders[1], folders[2], stats


def perplexity_before(test_blocks: Path, base_model: Path, pt_params: dict) -> dict:
    """Perplexity of the base model on the held-out blocks (``pt.eval``: batch_size, precision, max_blocks)."""
    return _perplexity(test_blocks, base_model, None, pt_params["eval"])


def perplexity_after(test_blocks: Path, base_model: Path, adapter: Path, pt_params: dict) -> dict:
    """Perplexity of the trained model on the same blocks, computed the same way."""
    return _perplexity(test_blocks, base_model, adapter, pt_params["eval"])


def _perplexity(test_blocks: Path, base_model: Path, adapter: Path | None, eval_params: dict) -> dict:
    from llm_finetune.training.objectives.language_model import perplexity

    rows = load_rows(test_blocks).to_list()[: eval_params.get("max_blocks") or None]
    return perplexity(base_model, adapter, rows, eval_params["batch_size"], eval_params["precision"])


def train_pt_adapter(train_blocks: Path, val_blocks: Path, base_model: Path, base_model_info: dict, pt_params: dict,
                     checkpoints: Path) -> tuple[ModelBundle, list[dict], dict]:
    """Continue pretraining ``base_model`` on the train blocks (``pt.train``: what differs from the defaults).

    The saved folder holds the adapter (or the model, for full / freeze), the tokenizer, the
    block settings (``pretraining.json``) and the training settings. Checkpoints and
    ``pt.train.resume`` work as in ``sft``.
    """
    from llm_finetune.training.engine import fit
    from llm_finetune.training.objectives.language_model import LanguageModelObjective

    settings = train_settings(pt_params.get("train"), "pt.train")
    data = {"train": token_folder_key(train_blocks), "val": token_folder_key(val_blocks)}
    folder = Path(checkpoints) / checkpoint_key(data, base_model_info, settings.as_params())
    train_rows, cap_record = settings.capped(load_rows(train_blocks).to_list(), "pt.train", "blocks")
    objective = LanguageModelObjective(base_model, flatten=settings.attention == "flash_attention_2")
    result = fit(objective, train_rows, load_rows(val_blocks).to_list(), settings, checkpoint_dir=folder,
                 settings_key="pt.train")
    info = result.info | cap_record | {"train_blocks": result.info["train_rows"], "val_blocks": result.info["val_rows"],
                          "versions": package_versions()}
    block_keys = ("block_size", "remainder", "cross_document_attention")
    files = {"pretraining.json": {k: pt_params.get(k) for k in block_keys},
             "training_params.json": settings.as_params(), "base_model.json": base_model_info, "train_info.json": info}
    return ModelBundle(model=result.model, tokenizer=load_tokenizer(base_model), files=files), result.history, info


def pt_metrics(before: dict, after: dict, block_stats: dict, train_info: dict, loss_history: list[dict]):
    """Metrics tracked in MLflow as ``pt.*`` (perplexity before / after, data and training figures) and the loss curve."""
    train, test = block_stats["train"], block_stats["test"]
    metrics = {"perplexity_before": before["perplexity"], "perplexity_after": after["perplexity"],
               "loss_before": before["loss"], "loss_after": after["loss"],
               "perplexity_reduction": round(1 - after["perplexity"] / before["perplexity"], 4),
               "test_scored_tokens": after["scored_tokens"], "test_blocks": test["blocks"],
               "train_documents": train["documents"], "train_tokens": train["tokens"], "train_blocks": train["blocks"],
               "train_blocks_used": train_info.get("rows_used", train["blocks"]),
               "trained_tokens_per_epoch": train["trained_tokens"], "block_size": train["block_size"],
               "dropped_tokens": sum(s["dropped_tokens"] for s in block_stats.values()),
               "padded_tokens": sum(s["padded_tokens"] for s in block_stats.values()),
               "global_steps": train_info["global_steps"], "train_runtime_s": train_info["train_runtime_s"],
               "input_tokens_per_s": train_info["input_tokens_per_s"], "final_val_loss": train_info["final_val_loss"]}
    logger.info("pt: perplexity %.3f -> %.3f on %d held-out tokens", metrics["perplexity_before"],
                metrics["perplexity_after"], metrics["test_scored_tokens"])
    figure = loss_curve(loss_history)
    figure.axes[0].set_title("Continued pretraining loss")
    return metrics, figure
