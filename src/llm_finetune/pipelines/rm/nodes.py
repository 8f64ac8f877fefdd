"""Nodes of the ``rm`` stage: train a pairwise reward model, evaluate it on held-out pairs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llm_finetune.io import ModelBundle
from llm_finetune.models.loading import load_tokenizer
from llm_finetune.models.precision import resolve_precision
from llm_finetune.models.reward import REWARD_FILE, load_reward_model, prepare_reward_model
from llm_finetune.provenance import checkpoint_key, package_versions, rows_digest
from llm_finetune.tokens.settings import TEMPLATE_FILE, saved_template
from llm_finetune.training.settings import train_settings

logger = logging.getLogger(__name__)
PAIR_IDS = ("chosen_input_ids", "rejected_input_ids")


def train_rm(train_pairs: list[dict], val_pairs: list[dict], base_model: Path, base_model_info: dict,
             tokenize_params: dict, rm_params: dict, checkpoints: Path) -> tuple[ModelBundle, list[dict]]:
    """Train the reward model; its folder holds the LoRA + score head, tokenizer, template and settings.

    Args:
        train_pairs: tokenized preference pairs (``rm.train_pairs``), capped at ``rm.train.max_train_rows``.
        val_pairs: pairs for the validation accuracy logged during training (and before it).
        base_model: the transformers folder the classifier is built on.
        base_model_info: its source record, saved next to the reward model.
        tokenize_params: ``tokenize``: the template saved with the model, for scoring later.
        rm_params: ``rm``: ``margin`` and ``train`` (what differs from the training defaults).
        checkpoints: the checkpoint root; ``rm.train.resume: true`` continues an interrupted run.
    """
    from llm_finetune.training.engine import fit
    from llm_finetune.training.objectives.reward import RewardObjective

    settings = train_settings(rm_params.get("train"), "rm.train")
    if not train_pairs:
        raise ValueError("rm.train_pairs is empty: no preference pair survived tokenization")
    train_pairs, cap_record = settings.capped(train_pairs, "rm.train", "pairs")
    tokenizer = load_tokenizer(base_model)
    objective = RewardObjective(base_model, tokenizer.pad_token_id, rm_params.get("margin", 0.0))
    data = {"objective": objective.name, "margin": objective.margin, "pairs": rows_digest([train_pairs, val_pairs], PAIR_IDS)}
    folder = Path(checkpoints) / checkpoint_key(data, base_model_info, settings.as_params())
    result = fit(objective, train_pairs, val_pairs, settings, checkpoint_dir=folder,
                 settings_key="rm.train")
    model = result.model.eval()
    info = result.info | cap_record | {"train_pairs": len(train_pairs), "val_pairs": len(val_pairs),
                                       "margin": objective.margin, "versions": package_versions()}
    record = {"base_model": str(Path(base_model).resolve()), "num_labels": 1, "pad_token_id": tokenizer.pad_token_id,
              "reward_index": "length - 1 (the last real token of each sequence)", "precision": info["precision"]}
    files = {TEMPLATE_FILE: saved_template(tokenize_params, tokenizer), "training_params.json": settings.as_params(),
             "base_model.json": base_model_info, "train_info.json": info, REWARD_FILE: record}
    return ModelBundle(model=model, tokenizer=tokenizer, files=files), result.history


def evaluate_rm(test_pairs: list[dict], reward_model: Path, base_model: Path, rm_params: dict) -> dict:
    """Pairwise accuracy, mean margin and mean rewards on held-out pairs, after and before training.

    ``before_training`` is the untrained model (the same seeded head, LoRA at zero): the level
    to beat. ``rm.evaluate``: ``batch_size``, ``precision`` (``auto`` / ``fp32`` / ``bf16``),
    ``before_training`` (false skips it).
    """
    from llm_finetune.training.objectives.reward import evaluate_pairs

    if not test_pairs:
        raise ValueError("rm.test_pairs is empty: raise rm_data.split.test_fraction or rm_data.max_rows")
    params, train = rm_params["evaluate"], train_settings(rm_params.get("train"), "rm.train")
    precision = resolve_precision(params.get("precision", train.precision))
    margin, batch_size = rm_params.get("margin", 0.0), params["batch_size"]
    model, tokenizer = load_reward_model(reward_model, precision, base_model)
    metrics = {"test": evaluate_pairs(model, test_pairs, tokenizer.pad_token_id, precision, batch_size, margin)}
    if params.get("before_training", True):
        untrained, _, _ = prepare_reward_model(base_model, train.lora.model_dump(), precision,
                                               tokenizer.pad_token_id, train.seed)
        metrics["before_training"] = evaluate_pairs(untrained, test_pairs, tokenizer.pad_token_id, precision,
                                                    batch_size, margin)
        metrics["accuracy_gain"] = round(metrics["test"]["accuracy"] - metrics["before_training"]["accuracy"], 4)
    info = json.loads((Path(reward_model) / "train_info.json").read_text())
    metrics["train"] = {key: info[key] for key in ("global_steps", "train_pairs", "rows_available", "max_train_rows",
                                                   "train_runtime_s", "input_tokens_per_s", "final_train_loss",
                                                   "final_val_accuracy") if info.get(key) is not None}
    metrics["precision"] = precision
    logger.info("Reward model on %d held-out pairs: accuracy %.3f (before training %s), mean margin %.3f",
                metrics["test"]["pairs"], metrics["test"]["accuracy"],
                metrics.get("before_training", {}).get("accuracy"), metrics["test"]["mean_margin"])
    return metrics
