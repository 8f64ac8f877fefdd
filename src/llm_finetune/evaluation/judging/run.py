"""Run the configured judges over response rows in the book's layout.

``judge`` parameters: ``reference`` (always runs), ``llm`` (an HTTP endpoint), ``local``
(a transformers folder or a model-registry entry), ``reward_model`` (a reward model from the
``rm`` pipeline, :mod:`llm_finetune.evaluation.judging.reward_judge`). Several judges can run at once;
each adds its columns to the rows and its counts to the summary.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llm_finetune.evaluation.judging.llm_judge import JudgeEndpoint, check_endpoint, judge_records, summarize_llm
from llm_finetune.evaluation.judging.local_judge import judge_with_local_model
from llm_finetune.evaluation.judging.reference import reference_scores, summarize_reference
from llm_finetune.evaluation.judging.reward_judge import add_reward_scores, check_reward_judge
from llm_finetune.models.registry import ModelSpec
from llm_finetune.provenance import redact_url
from llm_finetune.tokens.templates import alpaca_input

logger = logging.getLogger(__name__)
REQUIRED_FIELDS = ("instruction", "output", "model_response")


def check_judges(judge_params: dict, credentials: dict, model_registry: dict) -> dict:
    """Validate the judge configuration and reach the LLM endpoint; returns what will run."""
    local = judge_params.get("local")
    if local:
        if local.get("path"):
            if not (Path(local["path"]) / "config.json").is_file():
                raise FileNotFoundError(f"judge.local.path {local['path']} holds no transformers model (config.json)")
        elif local.get("model"):
            ModelSpec.from_registry(model_registry, local["model"])
        else:
            raise ValueError("judge.local needs `path` (a transformers folder) or `model` (a model_registry entry)")
    active = {"reference": True, "llm": None, "local": local or None,
              "reward_model": check_reward_judge(judge_params.get("reward_model"))}
    if judge_params.get("llm"):
        endpoint = JudgeEndpoint.from_params(judge_params["llm"], credentials)
        check_endpoint(endpoint)
        active["llm"] = {"url": redact_url(endpoint.url), "api": endpoint.api, "model": endpoint.model}
    return active


def normalize_rows(rows: list[dict], origin: str) -> list[dict]:
    """Rows in the book's layout with ``input``, ``family``, ``verifiable``, ``prompt_input`` filled in."""
    normalized = []
    for index, row in enumerate(rows):
        for name in REQUIRED_FIELDS:
            if not isinstance(row.get(name), str):
                raise ValueError(f"{origin}: row {index} field {name!r} is missing or not a string")
        entry = {"input": "", "family": None, "verifiable": None} | row
        entry.setdefault("prompt_input", alpaca_input({"messages": [], "meta": {"instruction": entry["instruction"],
                                                                                   "input": entry["input"]}}))
        normalized.append(entry)
    return normalized


def run_judges(rows: list[dict], judge_params: dict, credentials: dict, local_folder: Path | None) -> tuple[list[dict], dict]:
    """Score ``rows`` with every configured judge; returns ``(judged rows, summary)``."""
    meta_rows = [{"reference": r["output"], "response": r["model_response"],
                  "meta": {"family": r["family"]} | ({"verifiable": r["verifiable"]} if r["verifiable"] is not None else {})}
                 for r in rows]
    reference = judge_params.get("reference") or {}
    scores = reference_scores(meta_rows, exact_match_rows=reference.get("exact_match_rows", "auto"),
                              max_reference_words=reference.get("max_reference_words", 4))
    judged = [row | score for row, score in zip(rows, scores)]
    summary = summarize_reference(scores, meta_rows)
    llm_inputs = [{"prompt_input": r["prompt_input"], "reference": r["output"], "response": r["model_response"]}
                  for r in rows]
    if judge_params.get("llm"):
        endpoint = JudgeEndpoint.from_params(judge_params["llm"], credentials)
        judged, summary = _merge("llm", judged, summary, judge_records(llm_inputs, endpoint))
    if judge_params.get("local"):
        local = judge_params["local"]
        results = judge_with_local_model(llm_inputs, local_folder, batch_size=local.get("batch_size", 8),
                                         max_new_tokens=local.get("max_new_tokens", 16))
        judged, summary = _merge("local", judged, summary, results)
    if judge_params.get("reward_model"):
        judged, summary = add_reward_scores(judged, summary, judge_params["reward_model"])
    return judged, summary


def _merge(name: str, judged: list[dict], summary: dict, results: list[dict]) -> tuple[list[dict], dict]:
    rows = [row | {f"{name}_score": res["score"], f"{name}_raw": res["raw"], f"{name}_error": res["error"]}
            for row, res in zip(judged, results, strict=True)]
    counts = {key.replace("llm_", f"{name}_", 1): value for key, value in summarize_llm(results).items()}
    return rows, summary | counts
