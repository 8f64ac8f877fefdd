"""Nodes of the evaluation pipelines: generate (base and tuned) or read a responses file, judge, report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from llm_finetune.data.sources import read_source
from llm_finetune.evaluation import reporting
from llm_finetune.evaluation.generation import Decoding, generate_responses
from llm_finetune.evaluation.judging.run import check_judges, normalize_rows, run_judges
from llm_finetune.models.loading import load_causal_lm, load_tokenizer
from llm_finetune.models.materialize import materialize
from llm_finetune.models.precision import resolve_precision
from llm_finetune.models.registry import ModelSpec
from llm_finetune.serving import model_card
from llm_finetune.tokens.settings import TEMPLATE_FILE
from llm_finetune.tokens.templates import alpaca_input, load_template, template_from_saved

logger = logging.getLogger(__name__)


def generate_base_responses(test_records: list[dict], base_model: Path, generate_params: dict,
                            tokenize_params: dict) -> tuple[list[dict], dict]:
    """Responses of the untuned base model, prompted with ``tokenize.template``."""
    tokenizer = load_tokenizer(base_model, padding_side="left")
    template = load_template(tokenize_params["template"], tokenize_params.get("template_dir"))
    return _generate(test_records, base_model, None, tokenizer, template, tokenize_params["template"],
                     generate_params, "base")


def generate_tuned_responses(test_records: list[dict], base_model: Path, adapter: Path,
                             generate_params: dict) -> tuple[list[dict], dict]:
    """Responses of base + adapter, prompted with the template saved next to the adapter.

    ``generate.template``, when set, must name that template (a mismatch is an error).
    """
    tokenizer = load_tokenizer(adapter, padding_side="left")
    saved = json.loads((Path(adapter) / TEMPLATE_FILE).read_text())
    template = template_from_saved(saved, tokenizer, generate_params.get("template"))
    return _generate(test_records, base_model, adapter, tokenizer, template, saved["template"], generate_params,
                     "tuned")


def _generate(records: list[dict], base_model: Path, adapter: Path | None, tokenizer, template, template_name: str,
              params: dict, label: str) -> tuple[list[dict], dict]:
    """Generate with ``generate.*`` (batch_size, max_new_tokens, do_sample, ..., stop_strings, precision)."""
    records = records[: params["max_rows"]] if params.get("max_rows") else records
    precision = resolve_precision(params["precision"])
    model = load_causal_lm(base_model, dtype=torch.bfloat16 if precision == "bf16" else torch.float32, adapter=adapter)
    decoding = Decoding.from_params(params)
    backend = params.get("backend") or "transformers"
    responses, timing = generate_responses(model, tokenizer, records, template, params["batch_size"],
                                           decoding=decoding, backend=backend, llamacpp=params.get("llamacpp"))
    batch_of = {index: batch["batch"] for batch in timing.get("batches", ()) for index in batch["row_indices"]}
    rows = [_book_layout(record) | {"model_response": response, "model": label, "template": template_name,
                                    "batch": batch_of.get(index)}
            for index, (record, response) in enumerate(zip(records, responses))]
    timing |= {"model": label, "precision": precision, "batch_size": params["batch_size"], "backend": backend}
    return rows, timing


def _book_layout(record: dict) -> dict:
    """The book's ``instruction-data-with-response`` fields plus family / verifiable meta."""
    meta = record.get("meta") or {}
    user = next(m["content"] for m in record["messages"] if m["role"] == "user")
    return {"instruction": meta.get("instruction", user), "input": meta.get("input", ""),
            "output": record["messages"][-1]["content"], "family": meta.get("family"),
            "verifiable": meta.get("verifiable"), "prompt_input": alpaca_input(record)}


def judge_responses(responses: list[dict], judge_params: dict, judge_credentials: dict, model_registry: dict,
                    base_model_cache: Path) -> tuple[list[dict], dict]:
    """Score responses with every configured judge (``judge.reference`` always; ``judge.llm``, ``judge.local``)."""
    local_folder = _local_judge_folder(judge_params.get("local"), model_registry, base_model_cache)
    judged, summary = run_judges(normalize_rows(responses, "responses"), judge_params, judge_credentials, local_folder)
    logger.info("Judged %d responses: %s", len(judged),
                {k: v for k, v in summary.items() if not isinstance(v, dict)})
    return judged, summary


def _local_judge_folder(local: dict | None, model_registry: dict, cache_dir: Path) -> Path | None:
    if not local:
        return None
    if local.get("path"):
        return Path(local["path"])
    return materialize(ModelSpec.from_registry(model_registry, local["model"]), Path(cache_dir))


def build_report(base_judgments: list[dict], tuned_judgments: list[dict], base_summary: dict, tuned_summary: dict,
                 train_info: dict, report_params: dict):
    """Summary metrics (base, tuned, delta), side-by-side and per-family tables, worst/best examples, markdown."""
    base_summary = base_summary | {"score_stats": reporting.score_stats(base_judgments)}
    tuned_summary = tuned_summary | {"score_stats": reporting.score_stats(tuned_judgments)}
    summary = reporting.summary(base_summary, tuned_summary, train_info)
    families = reporting.family_table({"base": base_judgments, "tuned": tuned_judgments})
    examples = reporting.examples_table(base_judgments, tuned_judgments, report_params["n_examples"])
    logger.info("Exact match base %s -> tuned %s; ROUGE-L base %.3f -> tuned %.3f", base_summary["exact_match"],
                tuned_summary["exact_match"], base_summary["rouge_l"], tuned_summary["rouge_l"])
    return (summary, reporting.comparison_table(base_judgments, tuned_judgments), families, examples,
            reporting.markdown_report(summary, families, examples))


def write_model_card(adapter: Path, base_model: Path, base_model_info: dict, dataset_plan: list[dict],
                     align_report: dict, train_info: dict, summary_metrics: dict, judge_params: dict, model_name: str,
                     model_registry: dict, stage: str = "sft") -> str:
    """The tuned model's card (:mod:`llm_finetune.serving.model_card`) from this run's own records; the
    licence is the registry entry's ``license`` (else the base folder's card says it)."""
    licence = model_card.base_licence(base_model_info, model_registry.get(model_name), base_model)
    return model_card.model_card(adapter, base_model_info, dataset_plan, align_report, train_info, summary_metrics,
                                 judge_params, licence, stage)


def plot_report(base_judgments: list[dict], tuned_judgments: list[dict], loss_history: list[dict]):
    """The loss curve and the score histogram (base vs tuned)."""
    return (reporting.loss_curve(loss_history),
            reporting.score_histogram({"base": base_judgments, "tuned": tuned_judgments}))


def read_responses_file(source: dict, judge_params: dict, judge_credentials: dict, model_registry: dict) -> list[dict]:
    """Snapshot the responses file (``eval.responses``: path | url + sha256) after checking the judges.

    Rows need ``instruction``, ``output`` and ``model_response`` strings (the book's
    ``instruction-data-with-response`` layout); ``input``, ``family`` and ``verifiable`` are optional.
    """
    check_judges(judge_params, judge_credentials, model_registry)
    origin = source.get("path") or source.get("url") or "eval.responses"
    return normalize_rows(read_source(source), origin)


def build_eval_report(judgments: list[dict], judge_summary: dict, report_params: dict):
    """Summary with score statistics, per-family table, worst/best examples, histogram and markdown."""
    summary = {"responses": judge_summary | {"score_stats": reporting.score_stats(judgments)}}
    families = reporting.family_table({"responses": judgments})
    examples = reporting.examples_table(None, judgments, report_params["n_examples"])
    return (summary, families, examples, reporting.score_histogram({"responses": judgments}),
            reporting.markdown_report(summary, families, examples))
