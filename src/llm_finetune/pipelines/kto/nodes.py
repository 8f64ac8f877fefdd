"""Nodes of the ``kto`` stage: reference log-probs of the labelled rows (computed once, cached), training,
held-out evaluation.

As in ``dpo``: the start model is the base (pipeline ``kto``) or the base with the SFT adapter merged
in (``kto_sft``); a fresh LoRA trains on top, so the LoRA disabled is the reference; the saved
``kto.adapter`` is one LoRA on the base (SFT and KTO stacked when started from SFT). Each row's KL
partner is fixed after the ``kto.train.max_train_rows`` cap, in groups of the batch size
(:func:`llm_finetune.tokens.labelled.with_kl_partners`), so the reference, training and its key agree.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llm_finetune.io import ModelBundle
from llm_finetune.models.adapters import stacked_adapter
from llm_finetune.models.loading import load_scoring_model, load_tokenizer
from llm_finetune.models.precision import resolve_precision
from llm_finetune.provenance import checkpoint_key, file_digest, package_versions, rows_digest
from llm_finetune.tokens.labelled import ROW_KEYS, labelled_length, with_kl_partners
from llm_finetune.tokens.settings import TEMPLATE_FILE, saved_template
from llm_finetune.training.attention import attention_key
from llm_finetune.training.objectives.dpo import build_policy
from llm_finetune.training.objectives.kto import KtoObjective, KtoSettings, labelled_logps, labelled_report
from llm_finetune.training.reference import ADAPTER_FILES, cached_reference, check_start_adapter, reference_key
from llm_finetune.training.settings import TrainSettings, train_settings

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the reference computation changes, so old caches are not reused


def _settings(params: dict) -> tuple[TrainSettings, str]:
    settings = train_settings(params.get("train"), "kto.train")
    return settings, resolve_precision(settings.precision)


def training_rows(train_rows: list[dict], val_rows: list[dict], settings: TrainSettings,
                  cutoff_len: int) -> tuple[list[dict], list[dict], dict]:
    """The capped training rows and the val rows, each with its KL partner (groups of the global batch sizes:
    under N processes the ranks' micro-batches together are one group, as one process's batch would be)."""
    train_rows, cap_record = settings.capped(train_rows, "kto.train", "rows")
    return (with_kl_partners(train_rows, settings.global_batch_size, cutoff_len),
            with_kl_partners(val_rows, settings.eval_rows_per_batch * settings.world_size, cutoff_len), cap_record)


def _key(train: list[dict], val: list[dict], base_model_info: dict, start_adapter: Path | None,
         settings: TrainSettings, precision: str) -> str:
    return reference_key({"format": FORMAT_VERSION, "rows": rows_digest([train, val], ROW_KEYS)}, base_model_info,
                         start_adapter, attention_key(settings.attention, settings.compile), precision)


def reference_logps(train_rows: list[dict], val_rows: list[dict], base_model: Path, base_model_info: dict,
                    tokenize_params: dict, params: dict, cache_dir: Path, start_adapter: Path | None = None) -> dict:
    """Log-probs of every train / val completion and KL row under the start model, computed once per key.

    Args:
        train_rows, val_rows: labelled rows (``kto.{train,val}_labelled``).
        base_model, base_model_info: the base model folder and its source record.
        tokenize_params: ``tokenize`` (cutoff_len; the SFT adapter must use the same template).
        params: ``kto`` (``reference_batch_size``; ``train``: batch sizes, precision, attention, lora, cap).
        cache_dir: ``kto.reference_cache``; ``<key>.json`` is reused by a later run with the same key.
        start_adapter: the SFT adapter (pipeline ``kto_sft``), else ``None``.
    """
    from llm_finetune.training.attention import use_training_attention

    check_start_adapter(start_adapter, base_model, base_model_info, tokenize_params, "kto")
    settings, precision = _settings(params)
    train, val, _ = training_rows(train_rows, val_rows, settings, tokenize_params["cutoff_len"])

    def compute() -> dict:
        model = build_policy(base_model, start_adapter, settings.lora.model_dump(), precision)
        # the numerics training will see
        use_training_attention(model, settings.attention, precision, settings.compile,
                               max((labelled_length(row) for row in train + val), default=0))
        pad = load_tokenizer(base_model).pad_token_id
        splits = {name: labelled_logps(model, rows, pad, precision, params["reference_batch_size"], reference=True)
                  for name, rows in (("train", train), ("val", val))}
        return {"start_from": "sft" if start_adapter else "base", "precision": precision,
                "rows": {name: len(values["logps"]) for name, values in splits.items()}} | splits

    return cached_reference(cache_dir, _key(train, val, base_model_info, start_adapter, settings, precision), compute)


def _with_reference(rows: list[dict], reference: dict) -> list[dict]:
    if len(reference["logps"]) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(reference['logps'])} reference log-probs")
    return [{k: row[k] for k in (*ROW_KEYS, "label")} | {"ref_logp": a, "ref_kl_logp": b}
            for row, a, b in zip(rows, reference["logps"], reference["kl_logps"])]


def train_kto(train_rows: list[dict], val_rows: list[dict], reference: dict, base_model: Path, base_model_info: dict,
              tokenize_params: dict, params: dict, checkpoints: Path,
              start_adapter: Path | None = None) -> tuple[ModelBundle, list[dict], dict]:
    """Train a KTO LoRA on the start model; the adapter folder also holds tokenizer, template and settings.

    ``reference`` must belong to these rows, base model, start adapter and precision (its key).
    Checkpoints go to ``checkpoints/<key>``; ``kto.train.resume: true`` continues an interrupted run.
    """
    from llm_finetune.training.engine import fit

    settings, precision = _settings(params)
    train, val, cap_record = training_rows(train_rows, val_rows, settings, tokenize_params["cutoff_len"])
    key = _key(train, val, base_model_info, start_adapter, settings, precision)
    if reference["key"] != key:
        raise ValueError(f"kto.reference_logps {reference['key']} belongs to other rows, models or precision "
                         f"(expected {key}): run the kto.compute_reference_logps node again")
    if len({bool(row["label"]) for row in train}) < 2:
        raise ValueError("kto needs desirable and undesirable training rows; these are all "
                         f"{'desirable' if train[0]['label'] else 'undesirable'} (is kto_data.undesirable: keep?)")
    loss = KtoSettings.from_params(params)
    tokenizer = load_tokenizer(base_model)
    folder = Path(checkpoints) / checkpoint_key({"reference": key, "loss": loss.__dict__}, base_model_info,
                                                settings.as_params())
    result = fit(KtoObjective(base_model, start_adapter, loss, tokenizer.pad_token_id),
                 _with_reference(train, reference["train"]), _with_reference(val, reference["val"]), settings,
                 checkpoint_dir=folder, settings_key="kto.train")
    start = {"start_from": "sft" if start_adapter else "base",
             "sft_adapter": str(start_adapter) if start_adapter else None,
             "sft_adapter_sha256": file_digest(start_adapter, ADAPTER_FILES)}
    info = result.info | cap_record | {"val_rows": len(val)} | start | {"reference_key": key,
                                                                         "versions": package_versions()}
    saved = stacked_adapter(start_adapter, result.model) if start_adapter else result.model
    files = {TEMPLATE_FILE: saved_template(tokenize_params, tokenizer),
             "training_params.json": {"loss": loss.__dict__, "train": settings.as_params()},
             "base_model.json": base_model_info, "train_info.json": info}
    return ModelBundle(model=saved, tokenizer=tokenizer, files=files), result.history, info


def evaluate_kto(test_rows: list[dict], kto_adapter: Path, base_model: Path, train_info: dict, tokenize_params: dict,
                 params: dict, start_adapter: Path | None = None) -> dict:
    """Held-out metrics of the start model and of the KTO adapter on labelled rows.

    As in ``dpo``, the headline takes the *base model* as reference for both (the base scores 0: every
    logratio is 0, no better than the KL estimate): ``rewards/accuracies`` is the share of test rows on
    the right side of the KL estimate for their label (KL per group of ``kto.train.batch_size`` x processes rows, as
    in training). Rows made from preference pairs add ``pairwise_accuracy``: the DPO-scale pairwise
    reward accuracy, comparable with ``dpo.metrics``. ``tuned_vs_start`` takes the start model as reference.
    """
    if len(test_rows) < 2:
        raise ValueError("kto.test_labelled holds fewer than 2 rows: nothing to evaluate a KL estimate on")
    settings, precision = _settings(params)
    loss = KtoSettings.from_params(params)
    rows = with_kl_partners(test_rows, settings.global_batch_size, tokenize_params["cutoff_len"])
    pad = load_tokenizer(base_model).pad_token_id

    def logps(adapter: Path | None) -> dict:
        model = load_scoring_model(base_model, adapter, precision)
        return labelled_logps(model, rows, pad, precision, params["reference_batch_size"])

    base = logps(None)
    start = logps(start_adapter) if start_adapter else base
    tuned = logps(kto_adapter)
    group = settings.global_batch_size
    report = {"start": labelled_report(start, base, rows, loss, group),
              "tuned": labelled_report(tuned, base, rows, loss, group),
              "tuned_vs_start": labelled_report(tuned, start, rows, loss, group)}
    gain = report["tuned"]["rewards/accuracies"] - report["start"]["rewards/accuracies"]
    metrics = {"start_from": "sft" if start_adapter else "base", "loss_type": loss.loss_type, "beta": loss.beta,
               "test_rows": len(rows), "test_desirable": sum(bool(r["label"]) for r in rows), **report,
               "reward_accuracy_gain": round(gain, 6),
               "train": {k: v for k, v in train_info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    logger.info("Held-out KTO accuracy (reference: base model, %d rows): start (%s) %.3f, kto %.3f", len(rows),
                metrics["start_from"], report["start"]["rewards/accuracies"], report["tuned"]["rewards/accuracies"])
    return metrics
