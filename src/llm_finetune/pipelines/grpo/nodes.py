"""Nodes of the ``grpo`` stage: online training with our judges as rewards, held-out rewards before and after.

The start model is the base (pipeline ``grpo``) or the base with the SFT adapter merged (``grpo_sft``);
a fresh LoRA trains on top, so the LoRA disabled is the KL reference. Prompts come from the shared
data pipeline with their references (``grpo.rows: verifiable`` keeps the rows a reference can check,
``all`` keeps every row); the rewards are ``grpo.rewards`` (:mod:`llm_finetune.evaluation.rewards`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from llm_finetune.evaluation.generation import Decoding, completion_texts, generate_token_ids
from llm_finetune.evaluation.reporting import reward_curves
from llm_finetune.evaluation.rewards import RewardSet
from llm_finetune.io import ModelBundle
from llm_finetune.models.adapters import stacked_adapter
from llm_finetune.models.loading import load_scoring_model, load_tokenizer
from llm_finetune.models.precision import resolve_precision
from llm_finetune.provenance import checkpoint_key, package_versions, rows_digest
from llm_finetune.tokens.settings import TEMPLATE_FILE, saved_template, settings_from_params
from llm_finetune.tokens.templates import stop_token_ids
from llm_finetune.training.objectives.grpo import PROMPT_ROWS, GrpoObjective
from llm_finetune.training.objectives.grpo import settings_from_params as grpo_settings
from llm_finetune.training.reference import check_start_adapter
from llm_finetune.training.settings import train_settings

logger = logging.getLogger(__name__)
PROMPT_KEYS = ("prompt_ids", "reference")


def selected_prompts(prompts: list[dict], params: dict, split: str) -> tuple[list[dict], dict]:
    """The prompts ``grpo.rows`` keeps, and the count of each (the others are counted, not used)."""
    rows = params.get("rows", "verifiable")
    if rows not in PROMPT_ROWS:
        raise ValueError(f"grpo.rows {rows!r} is not one of {PROMPT_ROWS}")
    kept = prompts if rows == "all" else [p for p in prompts if p["meta"].get("verifiable")]
    if not kept:
        raise ValueError(f"grpo.rows: {rows}: none of the {len(prompts)} {split} prompts is kept (set grpo.rows: all)")
    logger.info("grpo.rows %s: %d of %d %s prompts", rows, len(kept), len(prompts), split)
    return kept, {f"{split}_prompts_available": len(prompts), f"{split}_prompts_used": len(kept)}


def _end_ids(tokenizer, tokenize_params: dict) -> list[int]:
    settings, _ = settings_from_params(tokenize_params, tokenizer)
    return list(dict.fromkeys([tokenizer.eos_token_id, *stop_token_ids(settings.template, tokenizer)]))


def train_grpo(train_prompts: list[dict], val_prompts: list[dict], base_model: Path, base_model_info: dict,
               tokenize_params: dict, params: dict, checkpoints: Path,
               start_adapter: Path | None = None) -> tuple[ModelBundle, list[dict], dict, list[dict]]:
    """Train a GRPO LoRA on the start model; the adapter folder also holds tokenizer, template and settings.
    Also returns the sampled completions kept per logging window (``grpo.log_completions`` prompts' groups,
    each completion with its rewards and advantage).

    Args:
        train_prompts, val_prompts: ``grpo.{train,val}_prompts`` (the val rewards are logged every eval_steps).
        params: ``grpo`` (loss_type, beta, epsilon_low / epsilon_high, num_generations, max_completion_length,
            temperature, scale_rewards, rewards, rows, train).
        checkpoints: ``checkpoints/<key>``; ``grpo.train.resume: true`` continues an interrupted run.
    """
    from llm_finetune.training.engine import fit

    check_start_adapter(start_adapter, base_model, base_model_info, tokenize_params, "grpo")
    settings, grpo, rewards = train_settings(params.get("train"), "grpo.train"), grpo_settings(params), \
        RewardSet.from_params(params.get("rewards") or [])
    train_rows, selection = selected_prompts(train_prompts, params, "train")
    val_rows, val_selection = selected_prompts(val_prompts, params, "val")
    val_rows = val_rows[: (params.get("eval") or {}).get("max_val_rows") or None]
    val_selection["val_prompts_sampled"] = len(val_rows)
    train_rows, cap_record = settings.capped(train_rows, "grpo.train", "prompts")
    tokenizer = load_tokenizer(base_model)
    objective = GrpoObjective(base_model, start_adapter, grpo, rewards.score, tokenizer.pad_token_id,
                              _end_ids(tokenizer, tokenize_params), tuple(r.name for r in rewards.rewards),
                              seed=settings.seed, log_every=settings.logging_steps,
                              log_prompts=params.get("log_completions", 2))
    identity = {"prompts": rows_digest([train_rows, val_rows], PROMPT_KEYS), "grpo": grpo.__dict__,
                "rewards": params.get("rewards")}
    folder = Path(checkpoints) / checkpoint_key(identity, base_model_info, settings.as_params())
    result = fit(objective, train_rows, val_rows, settings, checkpoint_dir=folder, settings_key="grpo.train")
    info = result.info | selection | val_selection | cap_record | {"start_from": "sft" if start_adapter else "base",
                                                                   "versions": package_versions()}
    saved = stacked_adapter(start_adapter, result.model) if start_adapter else result.model
    files = {TEMPLATE_FILE: saved_template(tokenize_params, tokenizer),
             "training_params.json": {"grpo": grpo.__dict__, "rewards": params.get("rewards"),
                                      "train": settings.as_params()},
             "base_model.json": base_model_info, "train_info.json": info}
    return ModelBundle(model=saved, tokenizer=tokenizer, files=files), result.history, info, result.logged_rows


def plot_rewards(loss_history: list[dict]):
    """The reward curves (:func:`llm_finetune.evaluation.reporting.reward_curves`) of the run."""
    return reward_curves(loss_history)


def evaluate_grpo(test_prompts: list[dict], grpo_adapter: Path, base_model: Path, train_info: dict,
                  tokenize_params: dict, params: dict, start_adapter: Path | None = None) -> dict:
    """Held-out rewards of the start model and of the GRPO adapter: greedy answers to the test prompts,
    scored by the same reward set (``rewards/<name>`` means, the weighted ``reward``, failure counts)."""
    rows, selection = selected_prompts(test_prompts, params, "test")
    rows = rows[: (params.get("eval") or {}).get("max_rows") or None]
    rewards = RewardSet.from_params(params.get("rewards") or [])
    settings = train_settings(params.get("train"), "grpo.train")
    precision = resolve_precision(settings.precision)
    tokenizer = load_tokenizer(base_model)
    decoding = Decoding(max_new_tokens=grpo_settings(params).max_completion_length)
    end_ids = _end_ids(tokenizer, tokenize_params)
    records = [{k: r.get(k) for k in ("prompt_input", "reference", "meta")} for r in rows]

    def scores(adapter: Path | None) -> dict:
        model = load_scoring_model(base_model, adapter, precision)
        ids, _ = generate_token_ids(model, tokenizer, [r["prompt_ids"] for r in rows],
                                    (params.get("eval") or {}).get("batch_size", 16), decoding, end_ids)
        texts = completion_texts(tokenizer, ids, end_ids)
        scored = rewards.score(texts, records)
        report = {"reward": round(sum(scored["total"]) / len(texts), 6)}
        report |= {f"rewards/{name}": round(sum(values) / len(values), 6)
                   for name, values in scored["by_reward"].items()}
        return report | {f"failed/{name}": count for name, count in scored["failed"].items()}

    start = scores(start_adapter)
    tuned = scores(grpo_adapter)
    metrics = {"start": start, "tuned": tuned, "test_prompts": len(rows), **selection,
               "reward_gain": round(tuned["reward"] - start["reward"], 6),
               "train": {k: v for k, v in train_info.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    logger.info("Held-out reward %s -> %s on %d prompts", start["reward"], tuned["reward"], len(rows))
    return metrics
