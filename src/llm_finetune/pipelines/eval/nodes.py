"""Nodes of the ``eval`` pipeline: read a responses file, judge it, report."""

from __future__ import annotations

from llm_finetune import reporting
from llm_finetune.data.sources import read_source
from llm_finetune.judging.run import check_judges, normalize_rows


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
