"""Judging: reference metrics (exact match, ROUGE-L) and an HTTP LLM-as-judge."""

from llm_finetune.evaluation.judging.llm_judge import (
    BOOK_PROMPT,
    JudgeEndpoint,
    JudgeEndpointError,
    build_prompt,
    check_endpoint,
    judge_one,
    judge_records,
    parse_score,
    summarize_llm,
)
from llm_finetune.evaluation.judging.reference import (
    bleu4,
    corpus_bleu4,
    exact_match,
    normalize_answer,
    reference_scores,
    rouge,
    rouge_l,
    summarize_reference,
)

__all__ = [
    "BOOK_PROMPT",
    "JudgeEndpoint",
    "JudgeEndpointError",
    "bleu4",
    "build_prompt",
    "check_endpoint",
    "corpus_bleu4",
    "exact_match",
    "judge_one",
    "judge_records",
    "normalize_answer",
    "parse_score",
    "reference_scores",
    "rouge",
    "rouge_l",
    "summarize_llm",
    "summarize_reference",
]
