"""Score responses with a saved reward model (:func:`score`), and ``judge.reward_model``, which adds
a reward to every judged row.

``judge.reward_model``: ``null`` (off), a folder, ``latest``, or
``{path: <folder> | latest, batch_size: 8, precision: auto}``. ``latest`` is the newest version
of ``rm.reward_model`` under ``data/06_models/rm/reward_model`` (relative to the project, where
``kedro run`` starts). A folder is one the ``rm`` pipeline saved (LoRA + score head, scored with
its training template) or any one-output transformers sequence classifier (scored with its
tokenizer's chat template).

Each row's conversation is rebuilt from its ``instruction`` / ``input`` with ``model_response``
as the answer. Rows get ``reward_score`` (higher is better; an unbounded logit, not the 0-100
judge scale) and ``reward_error``; the summary gets ``reward_score_mean``, ``reward_scored``,
``reward_total`` and ``reward_failed``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llm_finetune.io.paths import newest_version
from llm_finetune.models.precision import compute_context, resolve_precision
from llm_finetune.models.reward import load_reward_model, pad_sequences, sequence_rewards
from llm_finetune.tokens.packing import in_length_order

logger = logging.getLogger(__name__)
LATEST_ROOT = Path("data/06_models/rm/reward_model")
OPTIONS = {"path", "batch_size", "precision"}


def scoring_settings(folder: Path, tokenizer):
    """How the reward model's inputs are tokenized: its saved template and cutoff (our RMs), else the
    tokenizer's chat template (a reward model from elsewhere)."""
    from llm_finetune.tokens.conversations import TokenizeSettings
    from llm_finetune.tokens.templates import TOKENIZER, template_from_saved

    saved_file = Path(folder) / "prompt_template.json"
    if saved_file.is_file():
        saved = json.loads(saved_file.read_text())
        return TokenizeSettings(template_from_saved(saved, tokenizer), saved["cutoff_len"], "last_assistant",
                                saved.get("truncation", "truncate_response"))
    return TokenizeSettings(TOKENIZER, min(int(tokenizer.model_max_length), 4096), "last_assistant")


def sequence_scores(model, sequences: list[list[int]], pad_token_id: int, precision: str,
                    batch_size: int = 8) -> list[float]:
    """Rewards of token sequences, in input order (batched by length; the reward index rule of training)."""
    import torch

    model.eval()

    def score(batch: list[list[int]]) -> list[float]:
        input_ids, lengths = pad_sequences(batch, pad_token_id)
        with torch.no_grad(), compute_context(model, precision):
            return [round(reward, 4) for reward in sequence_rewards(model, input_ids, lengths).tolist()]

    return in_length_order(sequences, [len(s) for s in sequences], batch_size, score)


def score_records(folder: Path, records: list[dict], batch_size: int = 8, precision: str = "auto",
                  base_model: Path | None = None) -> list[dict]:
    """``{"score", "error"}`` per conversation (ending with the answer to score), in input order.

    Rows the reward model's template cannot tokenize (or whose answer falls beyond its
    cutoff) get ``score: None`` and the reason, never dropped.
    """
    from llm_finetune.tokens.conversations import tokenize_records

    precision = resolve_precision(precision)
    model, tokenizer = load_reward_model(folder, precision, base_model)
    rows, quarantined = tokenize_records(records, scoring_settings(folder, tokenizer), tokenizer)
    errors = {q["row"]: f"{q['reason']}: {q['detail']}" for q in quarantined}
    scores = iter(sequence_scores(model, [row["input_ids"] for row in rows], tokenizer.pad_token_id, precision,
                                  batch_size))
    return [{"score": None, "error": errors[i]} if i in errors else {"score": next(scores), "error": None}
            for i in range(len(records))]


def score(folder: Path, prompts: list[str | list[dict]], responses: list[str], **options) -> list[float | None]:
    """Rewards of ``responses`` to ``prompts`` (a user message, or the message list before the answer)."""
    if len(prompts) != len(responses):
        raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
    records = [{"messages": ([{"role": "user", "content": p}] if isinstance(p, str) else list(p))
                + [{"role": "assistant", "content": r}], "system": None, "tools": None, "meta": {}}
               for p, r in zip(prompts, responses)]
    return [result["score"] for result in score_records(folder, records, **options)]


def reward_settings(setting: str | dict) -> dict:
    """``judge.reward_model`` as ``{"path", "batch_size", "precision"}``."""
    setting = {"path": setting} if isinstance(setting, (str, Path)) else dict(setting)
    unknown = sorted(set(setting) - OPTIONS)
    if unknown:
        raise ValueError(f"judge.reward_model: unknown option(s) {unknown}; allowed: {sorted(OPTIONS)}")
    if not setting.get("path"):
        raise ValueError("judge.reward_model needs `path`: a reward model folder or `latest`")
    return {"batch_size": 8, "precision": "auto"} | setting


def resolve_reward_model(path: str | Path, root: Path = LATEST_ROOT) -> Path:
    """The reward model folder ``path`` names (``latest``: the newest saved ``rm.reward_model``)."""
    if str(path) == "latest":
        newest = newest_version(root)
        if newest is None:
            raise ValueError(f"judge.reward_model is `latest` but {root} holds no reward model yet; "
                             "train one with `kedro run --pipeline rm`")
        return newest
    folder = Path(path)
    if not ((folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()):
        raise ValueError(f"judge.reward_model: {folder} is not a reward model folder (no adapter_config.json or "
                         "config.json); train one with `kedro run --pipeline rm` or set `latest`")
    return folder


def check_reward_judge(setting: str | dict | None) -> dict | None:
    """Validate ``judge.reward_model`` before anything expensive; returns what will run."""
    if not setting:
        return None
    settings = reward_settings(setting)
    return settings | {"path": str(resolve_reward_model(settings["path"]))}


def reward_conversation(row: dict) -> dict:
    """The judged row as a conversation ending with its response (the book's alpaca layout)."""
    user = f"{row['instruction']}\n\n{row['input']}" if row.get("input") else row["instruction"]
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["model_response"]}],
            "system": None, "tools": None, "meta": {"instruction": row["instruction"], "input": row.get("input", "")}}


def add_reward_scores(judged: list[dict], summary: dict, setting: str | dict) -> tuple[list[dict], dict]:
    """Rows with ``reward_score`` / ``reward_error`` and the summary with the reward counts."""
    settings = reward_settings(setting)
    folder = resolve_reward_model(settings["path"])
    results = score_records(folder, [reward_conversation(row) for row in judged], settings["batch_size"],
                            settings["precision"])
    rows = [row | {"reward_score": r["score"], "reward_error": r["error"]} for row, r in zip(judged, results)]
    scores = [r["score"] for r in results if r["score"] is not None]
    counts = {"reward_score_mean": round(sum(scores) / len(scores), 4) if scores else None,
              "reward_scored": len(scores), "reward_total": len(results), "reward_failed": len(results) - len(scores)}
    logger.info("Reward model %s scored %d of %d responses (mean %s)", folder, len(scores), len(results),
                counts["reward_score_mean"])
    return rows, summary | counts
