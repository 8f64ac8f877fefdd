"""Nodes of the ``rm`` stage: train a pairwise reward model, evaluate it on held-out pairs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llm_finetune.io import ModelBundle
from llm_finetune.models.loading import resolve_precision
from llm_finetune.pipelines.sft.nodes import TEMPLATE_FILE, package_versions, saved_template
from llm_finetune.reward_model import (
    REWARD_FILE, evaluate_pairs, load_reward_model, prepare_reward_model, train_reward_model,
)

logger = logging.getLogger(__name__)


def train_rm(train_pairs: list[dict], val_pairs: list[dict], base_model: Path, base_model_info: dict,
             tokenize_params: dict, rm_params: dict) -> tuple[ModelBundle, list[dict]]:
    """Train the reward model; its folder holds the LoRA + score head, tokenizer, template and parameters.

    Args:
        train_pairs: tokenized preference pairs (``rm.train_pairs``), capped at ``rm.train.max_train_pairs``.
        val_pairs: pairs for the validation accuracy logged during training.
        base_model: the transformers folder the classifier is built on.
        base_model_info: its source record, saved next to the reward model.
        tokenize_params: ``tokenize``: the template saved with the model, for scoring later.
        rm_params: ``rm`` (``rm.train``: seed, precision, epochs / max_steps, batch_size, learning_rate,
            margin, lora ...).
    """
    params = rm_params["train"]
    if params.get("max_train_pairs"):
        train_pairs = train_pairs[: params["max_train_pairs"]]
    model, tokenizer, history, info = train_reward_model(train_pairs, val_pairs, base_model, params)
    info |= {"versions": package_versions()}
    record = {"base_model": str(Path(base_model).resolve()), "num_labels": 1, "pad_token_id": tokenizer.pad_token_id,
              "reward_index": "length - 1 (the last real token of each sequence)", "precision": info["precision"]}
    files = {TEMPLATE_FILE: saved_template(tokenize_params, tokenizer), "training_params.json": params,
             "base_model.json": base_model_info, "train_info.json": info, REWARD_FILE: record}
    return ModelBundle(model=model, tokenizer=tokenizer, files=files), history


def evaluate_rm(test_pairs: list[dict], reward_model: Path, base_model: Path, rm_params: dict) -> dict:
    """Pairwise accuracy, mean margin and mean rewards on held-out pairs, after and before training.

    ``before_training`` is the untrained model (the same seeded head, LoRA at zero): the level
    to beat. ``rm.evaluate``: ``batch_size``, ``precision`` (``auto`` / ``fp32`` / ``bf16``),
    ``before_training`` (false skips it).
    """
    if not test_pairs:
        raise ValueError("rm.test_pairs is empty: raise rm_data.split.test_fraction or rm_data.max_rows")
    params, train = rm_params["evaluate"], rm_params["train"]
    precision = resolve_precision(params.get("precision", train["precision"]))
    margin, batch_size = train.get("margin", 0.0), params["batch_size"]
    model, tokenizer = load_reward_model(reward_model, precision, base_model)
    metrics = {"test": evaluate_pairs(model, test_pairs, tokenizer.pad_token_id, precision, batch_size, margin)}
    if params.get("before_training", True):
        untrained, _, _ = prepare_reward_model(base_model, train["lora"], precision, tokenizer.pad_token_id,
                                               train["seed"])
        metrics["before_training"] = evaluate_pairs(untrained, test_pairs, tokenizer.pad_token_id, precision,
                                                    batch_size, margin)
        metrics["accuracy_gain"] = round(metrics["test"]["accuracy"] - metrics["before_training"]["accuracy"], 4)
    info = json.loads((Path(reward_model) / "train_info.json").read_text())
    metrics["train"] = {key: info[key] for key in ("global_steps", "train_pairs", "train_runtime_s", "tokens_per_s",
                                                   "final_train_loss", "final_val_accuracy") if key in info}
    metrics["precision"] = precision
    logger.info("Reward model on %d held-out pairs: accuracy %.3f (before training %s), mean margin %.3f",
                metrics["test"]["pairs"], metrics["test"]["accuracy"],
                metrics.get("before_training", {}).get("accuracy"), metrics["test"]["mean_margin"])
    return metrics
