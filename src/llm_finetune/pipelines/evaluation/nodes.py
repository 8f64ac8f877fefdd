"""Nodes of the ``evaluation`` pipeline: generate, judge, report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from llm_finetune import reporting
from llm_finetune.generation import generate_responses
from llm_finetune.judging import JudgeEndpoint, judge_records, reference_scores, summarize_llm, summarize_reference
from llm_finetune.models.loading import load_causal_lm, load_tokenizer, resolve_precision
from llm_finetune.pipelines.sft.nodes import TEMPLATE_FILE
from llm_finetune.templates import alpaca_input

logger = logging.getLogger(__name__)


def generate_base_responses(test_records: list[dict], base_model: Path, generate_params: dict,
                            tokenize_params: dict) -> list[dict]:
    """Responses of the untuned base model, prompted with ``tokenize.template``."""
    return _generate(test_records, base_model, None, tokenize_params["template"], generate_params, "base")


def generate_tuned_responses(test_records: list[dict], base_model: Path, adapter: Path,
                             generate_params: dict) -> list[dict]:
    """Responses of base + adapter, prompted with the template saved next to the adapter."""
    template = json.loads((Path(adapter) / TEMPLATE_FILE).read_text())["template"]
    return _generate(test_records, base_model, adapter, template, generate_params, "tuned")


def _generate(records: list[dict], base_model: Path, adapter: Path | None, template: str,
              params: dict, label: str) -> list[dict]:
    """Generate with ``generate.batch_size``, ``generate.max_new_tokens``, ``generate.precision``."""
    records = records[: params["max_rows"]] if params.get("max_rows") else records
    dtype = torch.bfloat16 if resolve_precision(params["precision"]) == "bf16" else torch.float32
    model = load_causal_lm(base_model, dtype=dtype, adapter=adapter)
    tokenizer = load_tokenizer(adapter or base_model, padding_side="left")
    responses, timing = generate_responses(model, tokenizer, records, template, params["batch_size"],
                                           params["max_new_tokens"])
    logger.info("%s model: %s", label, timing)
    return [_book_layout(record) | {"model_response": response, "model": label, "template": template}
            for record, response in zip(records, responses)]


def _book_layout(record: dict) -> dict:
    """The book's ``instruction-data-with-response`` fields plus family / verifiable meta."""
    meta = record.get("meta") or {}
    user = next(m["content"] for m in record["messages"] if m["role"] == "user")
    return {"instruction": meta.get("instruction", user), "input": meta.get("input", ""),
            "output": record["messages"][-1]["content"], "family": meta.get("family"),
            "verifiable": meta.get("verifiable"), "prompt_input": alpaca_input(record)}


def judge_responses(responses: list[dict], judge_params: dict, judge_credentials: dict) -> tuple[list[dict], dict]:
    """Score responses: reference metrics always, the HTTP LLM judge when ``judge.llm`` is set.

    Args:
        judge_params: ``judge`` (exact_match_rows, max_reference_words, llm).
    """
    records = [{"reference": r["output"], "response": r["model_response"],
                "meta": {"family": r["family"], **({"verifiable": r["verifiable"]} if r["verifiable"] is not None else {})}}
               for r in responses]
    scores = reference_scores(records, exact_match_rows=judge_params["exact_match_rows"],
                              max_reference_words=judge_params["max_reference_words"])
    judged = [response | score for response, score in zip(responses, scores)]
    summary = summarize_reference(scores, records)
    if judge_params.get("llm"):
        endpoint = JudgeEndpoint.from_params(judge_params["llm"], judge_credentials)
        llm_inputs = [{"prompt_input": r["prompt_input"], "reference": r["output"], "response": r["model_response"]}
                      for r in responses]
        results = judge_records(llm_inputs, endpoint)
        judged = [row | {"llm_score": res["score"], "llm_raw": res["raw"], "llm_error": res["error"]}
                  for row, res in zip(judged, results)]
        summary |= summarize_llm(results)
    logger.info("Judged %d responses: %s", len(judged), {k: v for k, v in summary.items() if k != "exact_match_by_family"})
    return judged, summary


def build_report(base_judgments: list[dict], tuned_judgments: list[dict], base_summary: dict, tuned_summary: dict,
                 loss_history: list[dict], train_info: dict):
    """Summary metrics (base, tuned, delta), loss-curve figure and base-vs-tuned table."""
    summary = reporting.summary(base_summary, tuned_summary, train_info)
    logger.info("Exact match base %s -> tuned %s; ROUGE-L base %.3f -> tuned %.3f", base_summary["exact_match"],
                tuned_summary["exact_match"], base_summary["rouge_l"], tuned_summary["rouge_l"])
    return summary, reporting.loss_curve(loss_history), reporting.comparison_table(base_judgments, tuned_judgments)
