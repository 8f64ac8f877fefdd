"""Nodes of the ``dpo`` stage: reference log-probs (computed once, cached), training, held-out evaluation.

The start model is the base (pipeline ``dpo``) or the base with the SFT adapter ``adapter``
merged in (pipeline ``dpo_sft``): a fresh DPO LoRA trains on top of it, so the LoRA disabled is
exactly the start model, the reference. The saved ``dpo.adapter`` is one LoRA on the base
(from SFT: the SFT and DPO LoRAs stacked, :func:`llm_finetune.models.adapters.stacked_adapter`), so generation,
evaluation and export load it like an SFT adapter.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llm_finetune.io import ModelBundle
from llm_finetune.models.adapters import stacked_adapter
from llm_finetune.models.loading import load_scoring_model, load_tokenizer
from llm_finetune.models.precision import resolve_precision
from llm_finetune.provenance import checkpoint_key, file_digest, package_versions, rows_digest
from llm_finetune.tokens.pairs import pair_length
from llm_finetune.tokens.settings import TEMPLATE_FILE, saved_template
from llm_finetune.training.attention import attention_key
from llm_finetune.training.objectives.dpo import (
    PAIR_KEYS,
    LossSettings,
    PreferenceObjective,
    build_policy,
    pair_logps,
    preference_report,
    with_reference,
)
from llm_finetune.training.reference import ADAPTER_FILES, cached_reference, check_start_adapter
from llm_finetune.training.reference import reference_key as shared_reference_key
from llm_finetune.training.settings import TrainSettings, train_settings

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the reference computation changes, so old caches are not reused


def _settings(params: dict) -> tuple[TrainSettings, str]:
    settings = train_settings(params.get("train"), "dpo.train")
    return settings, resolve_precision(settings.precision)


def training_pairs(train_pairs: list[dict], settings: TrainSettings) -> tuple[list[dict], dict]:
    """The training pairs, the first ``dpo.train.max_train_rows`` when set, and the cap's record."""
    return settings.capped(train_pairs, "dpo.train", "pairs")


def reference_key(train_pairs: list[dict], val_pairs: list[dict], base_model_info: dict, start_adapter: Path | None,
                  settings: TrainSettings, precision: str) -> str:
    """What the reference log-probs depend on: pairs, base model, starting adapter, numerics."""
    return shared_reference_key({"format": FORMAT_VERSION, "pairs": rows_digest([train_pairs, val_pairs], PAIR_KEYS)},
                                base_model_info, start_adapter, attention_key(settings.attention, settings.compile),
                                precision)


def reference_logps(train_pairs: list[dict], val_pairs: list[dict], base_model: Path, base_model_info: dict,
                    tokenize_params: dict, params: dict, cache_dir: Path, start_adapter: Path | None = None) -> dict:
    """Log-probs of every train and val pair under the start model, computed once per key (none for the
    reference-free ``orpo`` / ``simpo``: the record then says so and no model is loaded).

    Args:
        train_pairs, val_pairs: tokenized pairs (``dpo.{train,val}_pairs``).
        base_model, base_model_info: the base model folder and its source record.
        tokenize_params: ``tokenize`` (the SFT adapter must use the same template).
        params: ``dpo`` (``reference_batch_size``; ``train``: precision, attention, lora, max_train_rows).
        cache_dir: ``dpo.reference_cache``; ``<key>.json`` is reused by any later run with the same
            pairs, base model, starting adapter and numerics.
        start_adapter: the SFT adapter (pipeline ``dpo_sft``), else ``None``.
    """
    from llm_finetune.training.attention import use_training_attention

    check_start_adapter(start_adapter, base_model, base_model_info, tokenize_params, "dpo")
    settings, precision = _settings(params)
    train_pairs, _ = training_pairs(train_pairs, settings)
    key = reference_key(train_pairs, val_pairs, base_model_info, start_adapter, settings, precision)
    loss = LossSettings.from_params(params)
    if not loss.needs_reference:
        logger.info("dpo.loss_type %s is reference-free: no reference pass", loss.loss_type)
        return {"key": key, "reference_free": True, "loss_type": loss.loss_type,
                "start_from": "sft" if start_adapter else "base", "train": None, "val": None}

    def compute() -> dict:
        model = build_policy(base_model, start_adapter, settings.lora.model_dump(), precision)
        # the numerics training will see
        use_training_attention(model, settings.attention, precision, settings.compile,
                               max((pair_length(row) for row in train_pairs + val_pairs), default=0))
        pad = load_tokenizer(base_model).pad_token_id
        splits = {name: pair_logps(model, pairs, pad, precision, params["reference_batch_size"], reference=True)
                  for name, pairs in (("train", train_pairs), ("val", val_pairs))}
        return {"start_from": "sft" if start_adapter else "base", "precision": precision,
                "pairs": {name: len(values["chosen"]) for name, values in splits.items()}} | splits

    return cached_reference(cache_dir, key, compute)


def train_dpo(train_pairs: list[dict], val_pairs: list[dict], reference: dict, base_model: Path,
              base_model_info: dict, tokenize_params: dict, params: dict, checkpoints: Path,
              start_adapter: Path | None = None) -> tuple[ModelBundle, list[dict], dict]:
    """Train a DPO LoRA on the start model; the adapter folder also holds tokenizer, template and settings.

    ``reference`` must belong to these pairs, base model, start adapter and precision (its key).
    Checkpoints go to ``checkpoints/<key>``; ``dpo.train.resume: true`` continues an interrupted run.
    """
    from llm_finetune.training.engine import fit

    settings, precision = _settings(params)
    train_pairs, cap_record = training_pairs(train_pairs, settings)
    key = reference_key(train_pairs, val_pairs, base_model_info, start_adapter, settings, precision)
    if reference["key"] != key:
        raise ValueError(f"dpo.reference_logps {reference['key']} belongs to other pairs, models or precision "
                         f"(expected {key}): run the dpo.compute_reference_logps node again")
    loss = LossSettings.from_params(params)
    if reference.get("reference_free") and loss.needs_reference:
        raise ValueError(f"dpo.reference_logps was made for a reference-free loss; dpo.loss_type {loss.loss_type!r} "
                         "needs reference log-probs: run the dpo.compute_reference_logps node again")
    tokenizer = load_tokenizer(base_model)
    objective = PreferenceObjective(base_model, start_adapter, loss, tokenizer.pad_token_id)
    folder = Path(checkpoints) / checkpoint_key({"reference": key, "loss": loss.__dict__}, base_model_info,
                                                settings.as_params())
    result = fit(objective, with_reference(train_pairs, reference["train"]), with_reference(val_pairs, reference["val"]),
                 settings, checkpoint_dir=folder,
                 settings_key="dpo.train")
    start = {"start_from": "sft" if start_adapter else "base",
             "sft_adapter": str(start_adapter) if start_adapter else None,
             "sft_adapter_sha256": file_digest(start_adapter, ADAPTER_FILES)}
    info = result.info | cap_record | {"train_pairs": len(train_pairs), "val_pairs": len(val_pairs)} | start | {
        "reference_key": key, "versions": package_versions()}
    saved = stacked_adapter(start_adapter, result.model) if start_adapter else result.model
    files = {TEMPLATE_FILE: saved_template(tokenize_params, tokenizer),
             "training_params.json": {"loss": loss.__dict__, "train": settings.as_params()},
             "base_model.json": base_model_info, "train_info.json": info}
    return ModelBundle(model=saved, tokenizer=tokenizer, files=files), result.history, info


def evaluate_dpo(test_pairs: list[dict], dpo_adapter: Path, base_model: Path, train_info: dict, params: dict,
                 start_adapter: Path | None = None) -> dict:
    """Held-out preference metrics of the start model and of the DPO adapter.

    Reward accuracy (the headline) takes the *base model* as reference for both, so the SFT
    adapter and the DPO adapter are compared on one scale: the share of test pairs where
    ``β·(log π(chosen) - log π_base(chosen)) > β·(log π(rejected) - log π_base(rejected))``.
    The base model itself scores 0 there (every pair a tie). ``tuned_vs_start`` holds the loss and
    metrics against the DPO reference (the start model), as TRL's evaluation reports them. Every
    loss type is reported on this DPO scale, so ``sigmoid``, ``orpo`` and ``simpo`` adapters compare in
    one table; a reference-free loss adds ``objective``: its own loss and rewards (``β·mean log-prob``).
    """
    if not test_pairs:
        raise ValueError("dpo.test_pairs is empty: no held-out pairs to evaluate on")
    precision = resolve_precision(train_settings(params.get("train"), "dpo.train").precision)
    settings = LossSettings.from_params(params)
    pad = load_tokenizer(base_model).pad_token_id

    def logps(adapter: Path | None) -> dict:
        model = load_scoring_model(base_model, adapter, precision)
        return pair_logps(model, test_pairs, pad, precision, params["reference_batch_size"])

    base = logps(None)
    start = logps(start_adapter) if start_adapter else base
    tuned = logps(dpo_adapter)
    scale = settings if settings.needs_reference else LossSettings("sigmoid", settings.beta)
    report = {"start": preference_report(start, base, test_pairs, scale),
              "tuned": preference_report(tuned, base, test_pairs, scale),
              "tuned_vs_start": preference_report(tuned, start, test_pairs, scale)}
    if not settings.needs_reference:
        report["objective"] = {name: preference_report(values, None, test_pairs, settings)
                               for name, values in (("start", start), ("tuned", tuned))}
    gain = report["tuned"]["rewards/accuracies"] - report["start"]["rewards/accuracies"]
    metrics = {"start_from": "sft" if start_adapter else "base", "loss_type": settings.loss_type,
               "beta": settings.beta, "test_pairs": len(test_pairs), **report, "reward_accuracy_gain": round(gain, 6),
               "train": {k: v for k, v in train_info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    logger.info("Held-out reward accuracy (reference: base model, %d pairs): start (%s) %.3f, dpo %.3f",
                len(test_pairs), metrics["start_from"], report["start"]["rewards/accuracies"],
                report["tuned"]["rewards/accuracies"])
    return metrics
