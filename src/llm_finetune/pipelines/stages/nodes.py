"""Nodes shared by the rm / dpo / kto / pt stages: a preflight per data kind, pair and labelled-row tokenization."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from llm_finetune.models.loading import load_tokenizer
from llm_finetune.models.registry import ModelSpec
from llm_finetune.tokens.blocks import BlockSettings
from llm_finetune.tokens.labelled import tokenize_labelled
from llm_finetune.tokens.pairs import tokenize_pairs
from llm_finetune.tokens.settings import settings_from_params
from llm_finetune.training.objectives.dpo import LossSettings
from llm_finetune.training.objectives.kto import KtoSettings
from llm_finetune.training.settings import caps_in_effect, train_settings

logger = logging.getLogger(__name__)
# stages whose batch is part of the method, with why (train.batch_size auto is for the others)
FIXED_BATCH_STAGES = {"kto": "its batch is the group each row's KL partner comes from",
                      "grpo": "its batch is the prompts sampled and scored together"}
STAGE_KINDS = {"rm": "preference", "dpo": "preference", "kto": "labelled", "pt": "text", "grpo": "prompt"}
# record kinds a stage's data may hold: kto reads labelled conversations (kto_tag) or preference pairs
ACCEPTED_KINDS = {"preference": ("preference",), "labelled": ("conversation", "preference"), "text": ("text",),
                  "prompt": ("conversation",)}


def stage_preflight(stage: str, dataset_plan: list[dict], model_name: str, model_registry: dict,
                    tokenize_params: dict, stage_params: dict, data_params: dict | None = None) -> dict:
    """Fail before anything expensive: the data kind, the model entry, the template, the stage's settings.

    ``stage_params``: the stage's block (``rm``, ``dpo``, ``kto``, ``pt``); its ``train`` settings are
    validated (unknown keys named with the nearest known one), and the objective's own settings.
    ``data_params``: the stage's data block (``kto_data`` must keep the undesirable rows).
    """
    kind = STAGE_KINDS[stage]
    wrong = [f"{d['name']} ({d['kind']})" for d in dataset_plan if d["kind"] not in ACCEPTED_KINDS[kind]]
    if wrong:
        raise ValueError(f"{stage} trains on {kind} data; {stage}_data.datasets holds {', '.join(wrong)}. "
                         f"Choose {kind} datasets, e.g. --params \"{stage}_data.datasets=<name>\".")
    if kind == "labelled" and (data_params or {}).get("undesirable", "quarantine") != "keep":
        raise ValueError(f"{stage} learns from the undesirable rows too: set {stage}_data.undesirable: keep "
                         "(quarantine is for stages that train on every answer they see, as sft does)")
    spec = ModelSpec.from_registry(model_registry, model_name)
    if spec.source != "hub":
        spec.locate()
    if kind != "text":
        settings_from_params(tokenize_params)
    settings = train_settings(stage_params.get("train"), f"{stage}.train")
    if settings.batch_size == "auto" and stage in FIXED_BATCH_STAGES:
        raise ValueError(f"{stage}.train.batch_size auto: {FIXED_BATCH_STAGES[stage]}, so it is a setting of the "
                         "method, not a speed choice; set a number")
    if stage != "pt" and settings.method != "lora":
        raise ValueError(f"{stage}.train.method {settings.method!r}: {stage} trains a LoRA on the start model (its "
                         "adapter disabled is the reference / the base of the score head); use lora")
    limits = {"tokenize.cutoff_len": tokenize_params["cutoff_len"]} if kind != "text" else {}
    if stage == "pt":
        limits["pt.eval.max_blocks"] = (stage_params.get("eval") or {}).get("max_blocks")
    if stage == "dpo":
        LossSettings.from_params(stage_params)
    if stage == "kto":
        KtoSettings.from_params(stage_params)
    if stage == "pt":
        BlockSettings.from_params(stage_params)
    if stage == "grpo":
        from llm_finetune.evaluation.rewards import RewardSet
        from llm_finetune.training.objectives.grpo import PROMPT_ROWS
        from llm_finetune.training.objectives.grpo import settings_from_params as grpo_settings

        grpo = grpo_settings(stage_params)
        RewardSet.from_params(stage_params.get("rewards") or [])
        if stage_params.get("rows", "verifiable") not in PROMPT_ROWS:
            raise ValueError(f"grpo.rows {stage_params['rows']!r} is not one of {PROMPT_ROWS}")
        if settings.save_steps and settings.save_steps % grpo.num_iterations:
            raise ValueError(f"grpo.train.save_steps {settings.save_steps} must be a multiple of grpo.num_iterations "
                             f"{grpo.num_iterations}: a checkpoint between two updates on one generation batch "
                             "could not resume it")
        log_completions = stage_params.get("log_completions", 2)
        if not isinstance(log_completions, int) or log_completions < 0:
            raise ValueError("grpo.log_completions must be a whole number >= 0 (prompts kept per logging window)")
    report = {"stage": stage, "kind": kind, "model": model_name, "source": spec.source,
              "datasets": [d["name"] for d in dataset_plan], "trust_remote_code": spec.trust_remote_code,
              "caps": caps_in_effect(settings, f"{stage}.train", dataset_plan, limits)}
    logger.info("Preflight checks passed: %s", report)
    return report


def tokenize_pair_split(records: list[dict], base_model: Path, tokenize_params: dict) -> tuple[list, list, dict]:
    """Tokenize one split of preference records: ``(pairs, quarantined, stats)`` (pairs are never packed)."""
    tokenizer = load_tokenizer(base_model)
    settings, _ = settings_from_params(tokenize_params, tokenizer)
    pairs, quarantined = tokenize_pairs(records, settings, tokenizer)
    stats = {"pairs_in": len(records), "pairs": len(pairs), "quarantined": len(quarantined),
             "quarantined_by_reason": dict(Counter(q["reason"] for q in quarantined)),
             "truncated": sum(p["truncated"] for p in pairs), "template": tokenize_params["template"],
             "cutoff_len": settings.cutoff_len}
    for side in ("chosen", "rejected"):
        lengths = [len(p[f"{side}_input_ids"]) for p in pairs]
        stats[f"mean_{side}_tokens"] = round(sum(lengths) / len(lengths), 1) if lengths else 0
    logger.info("Tokenized pairs %s", {k: v for k, v in stats.items() if k != "quarantined_by_reason"})
    return pairs, quarantined, stats


def tokenize_labelled_split(records: list[dict], base_model: Path, tokenize_params: dict) -> tuple[list, list, dict]:
    """Tokenize one split of KTO records: ``(rows, quarantined, stats)`` (rows are never packed)."""
    tokenizer = load_tokenizer(base_model)
    settings, _ = settings_from_params(tokenize_params, tokenizer)
    rows, quarantined = tokenize_labelled(records, settings, tokenizer)
    desirable = sum(row["label"] for row in rows)
    stats = {"records_in": len(records), "rows": len(rows), "desirable": desirable,
             "undesirable": len(rows) - desirable, "from_pairs": sum(row["pair"] is not None for row in rows),
             "quarantined": len(quarantined), "quarantined_by_reason": dict(Counter(q["reason"] for q in quarantined)),
             "truncated": sum(row["truncated"] for row in rows), "template": tokenize_params["template"],
             "cutoff_len": settings.cutoff_len,
             "mean_tokens": round(sum(len(r["input_ids"]) for r in rows) / len(rows), 1) if rows else 0}
    logger.info("Tokenized labelled rows %s", {k: v for k, v in stats.items() if k != "quarantined_by_reason"})
    return [{k: v for k, v in row.items() if k != "turns_dropped"} for row in rows], quarantined, stats


def tokenize_prompt_split(records: list[dict], base_model: Path, tokenize_params: dict) -> tuple[list, list, dict]:
    """One split of conversations as GRPO prompts: ``(rows, quarantined, stats)``.

    A row is the prompt's tokens (every turn before the last answer, with the template's generation
    prompt), the judges' ``prompt_input``, the last answer as ``reference`` and the record's ``meta``
    (``verifiable``, ``family``). A prompt longer than ``tokenize.cutoff_len`` is quarantined, not cut.
    """
    from llm_finetune.tokens.conversations import encode_prompts
    from llm_finetune.tokens.templates import alpaca_input

    tokenizer = load_tokenizer(base_model)
    settings, _ = settings_from_params(tokenize_params, tokenizer)
    encoded = encode_prompts(records, settings.template, tokenizer)
    rows, quarantined = [], []
    for index, (record, ids) in enumerate(zip(records, encoded)):
        if len(ids) > settings.cutoff_len:
            quarantined.append({"row": index, "reason": f"prompt of {len(ids)} tokens > cutoff_len",
                                "record": record})
            continue
        rows.append({"prompt_ids": ids, "prompt_input": alpaca_input(record),
                     "reference": record["messages"][-1]["content"], "meta": record.get("meta") or {}})
    stats = {"records_in": len(records), "prompts": len(rows), "quarantined": len(quarantined),
             "quarantined_by_reason": dict(Counter(q["reason"].split(" of ")[0] for q in quarantined)),
             "verifiable": sum(bool(r["meta"].get("verifiable")) for r in rows),
             "template": tokenize_params["template"],
             "mean_prompt_tokens": round(sum(len(r["prompt_ids"]) for r in rows) / len(rows), 1) if rows else 0}
    logger.info("Prompts %s", {k: v for k, v in stats.items() if k != "quarantined_by_reason"})
    return rows, quarantined, stats
