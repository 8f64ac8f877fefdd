"""Reference-based metrics: normalized exact match, ROUGE-1/2/L (rouge_score) and BLEU-4 (sacrebleu).

Normalization follows the SQuAD convention (lowercase, drop punctuation,
collapse whitespace) with two deliberate differences:

* decimal points and thousands separators between digits survive, so
  ``3.5`` and ``35`` stay different answers;
* articles are kept: short answers are compared on what the model wrote,
  and stripping ``a``/``an``/``the`` rarely changes a verdict on the short
  factual references exact match is used for.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sacrebleu
from rouge_score import rouge_scorer

EM_MODES = ("auto", "flag", "all")

_WHITESPACE = re.compile(r"\s+")


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def _between_digits(text: str, index: int) -> bool:
    return 0 < index < len(text) - 1 and text[index - 1].isdigit() and text[index + 1].isdigit()


def _strip_punctuation(text: str) -> str:
    return "".join(
        char
        for index, char in enumerate(text)
        if not _is_punctuation(char) or (char in ".," and _between_digits(text, index))
    )


def normalize_answer(text: str) -> str:
    """Return ``text`` in the canonical form used for exact match.

    NFKC-normalize, lowercase, delete punctuation (ASCII and Unicode ``P*``)
    except ``.``/``,`` between two digits, collapse whitespace and strip.
    A trailing period is therefore always dropped (``"Paris."`` -> ``"paris"``).
    """
    text = _strip_punctuation(unicodedata.normalize("NFKC", text).lower().strip())
    return _WHITESPACE.sub(" ", text).strip()


def exact_match(prediction: str, reference: str) -> bool:
    """True when both strings are equal after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(reference)


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (Porter-stemmed) of ``prediction`` against ``reference``."""
    return rouge(prediction, reference)["rouge_l"]


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (Porter-stemmed), from ``rouge_score``."""
    scores = _rouge_scorer().score(reference, prediction)
    return {"rouge_1": float(scores["rouge1"].fmeasure), "rouge_2": float(scores["rouge2"].fmeasure),
            "rouge_l": float(scores["rougeL"].fmeasure)}


def bleu4(prediction: str, reference: str) -> float:
    """Sentence BLEU-4 in 0..1 (sacrebleu, exponential smoothing)."""
    return float(sacrebleu.sentence_bleu(prediction, [reference]).score) / 100


def corpus_bleu4(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 in 0..1 (sacrebleu): the standard way to report BLEU over a test set."""
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score) / 100


def _meta(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return record.get("meta") or {}


def _em_eligible(record: Mapping[str, Any], mode: str, max_reference_words: int) -> bool:
    if mode == "all":
        return True
    verifiable = _meta(record).get("verifiable")
    if mode == "flag":
        return verifiable is True
    if verifiable is not None:
        return bool(verifiable)
    return len(normalize_answer(record["reference"]).split()) <= max_reference_words


def reference_scores(
    records: Iterable[Mapping[str, Any]],
    *,
    exact_match_rows: str = "auto",
    max_reference_words: int = 4,
) -> list[dict[str, Any]]:
    """Score each record's ``response`` against its ``reference``.

    ``exact_match_rows`` decides which rows get an exact-match verdict (others
    get ``None``): ``"auto"`` uses ``meta["verifiable"]`` when present and
    otherwise accepts references of at most ``max_reference_words`` words;
    ``"flag"`` accepts only rows flagged verifiable; ``"all"`` accepts every row.
    """
    if exact_match_rows not in EM_MODES:
        raise ValueError(
            f"exact_match_rows must be one of {', '.join(EM_MODES)}; got {exact_match_rows!r}"
        )
    scores = []
    for record in records:
        reference, response = record["reference"], record["response"]
        eligible = _em_eligible(record, exact_match_rows, max_reference_words)
        scores.append(
            {
                "exact_match": exact_match(response, reference) if eligible else None,
                **rouge(response, reference),
                "bleu_4": bleu4(response, reference),
            }
        )
    return scores


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_reference(
    scores: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Aggregate :func:`reference_scores` output.

    Exact match is averaged over eligible rows only (``None`` when there are
    none), overall and per ``meta["family"]`` (rows without one count as
    ``"unknown"``). ROUGE-L is averaged over all rows.
    """
    if len(scores) != len(records):
        raise ValueError(f"got {len(scores)} scores for {len(records)} records")
    eligible: list[float] = []
    by_family: dict[str, list[float]] = defaultdict(list)
    for score, record in zip(scores, records):
        if score["exact_match"] is None:
            continue
        value = float(score["exact_match"])
        eligible.append(value)
        by_family[str(_meta(record).get("family") or "unknown")].append(value)
    return {
        "exact_match": _mean(eligible),
        "exact_match_n": len(eligible),
        "rouge_1": _mean([float(score["rouge_1"]) for score in scores]),
        "rouge_2": _mean([float(score["rouge_2"]) for score in scores]),
        "rouge_l": _mean([float(score["rouge_l"]) for score in scores]),
        "bleu_4": corpus_bleu4([r["response"] for r in records], [r["reference"] for r in records]) if records else None,
        "n": len(scores),
        "exact_match_by_family": {
            family: sum(values) / len(values) for family, values in sorted(by_family.items())
        },
    }
