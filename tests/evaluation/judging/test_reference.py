"""Tests for reference metrics: normalization, exact match, ROUGE-L and summaries."""

from __future__ import annotations

import pytest

from llm_finetune.evaluation.judging import (
    exact_match,
    normalize_answer,
    reference_scores,
    rouge_l,
    summarize_reference,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Paris.  ", "paris"),
        ("The  Eiffel\tTower!", "the eiffel tower"),
        ("3.5", "3.5"),
        ("1,000 apples.", "1,000 apples"),
        ("It costs 3.5.", "it costs 3.5"),
        ("a.b, c", "ab c"),
        ("don't", "dont"),
        ("«Bonjour» — “hi”", "bonjour hi"),
        ("ＡＢＣ１２", "abc12"),
        ("x = (1, 2)", "x 1 2"),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_compares_normalized_strings() -> None:
    assert exact_match("  The answer: PARIS. ", "the answer paris")
    assert exact_match("3.5", "3.5.")
    assert not exact_match("35", "3.5")
    assert not exact_match("a cat", "cat")


def test_rouge_l_sanity() -> None:
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert rouge_l("alpha beta", "gamma delta") == 0.0
    partial = rouge_l("the cat sat", "the cat sat on the mat")
    assert 0.0 < partial < 1.0
    assert rouge_l("cats running", "cat runs") == pytest.approx(1.0)


def _record(reference: str, response: str, **meta: object) -> dict:
    return {"reference": reference, "response": response, "meta": meta}


RECORDS = [
    _record("Paris", "paris.", family="capitals"),
    _record("The quick brown fox jumps over", "the quick brown fox jumps over"),
    _record("a long free form answer here", "nope", verifiable=True, family="math"),
    _record("42", "41", verifiable=False, family="math"),
]


def test_auto_mode_uses_flag_then_reference_length() -> None:
    scores = reference_scores(RECORDS)
    assert [s["exact_match"] for s in scores] == [True, None, False, None]
    assert all(isinstance(s["rouge_l"], float) for s in scores)


def test_auto_mode_respects_max_reference_words() -> None:
    scores = reference_scores(RECORDS, max_reference_words=6)
    assert scores[1]["exact_match"] is True


def test_flag_mode_only_flagged_rows() -> None:
    scores = reference_scores(RECORDS, exact_match_rows="flag")
    assert [s["exact_match"] for s in scores] == [None, None, False, None]


def test_all_mode_every_row() -> None:
    scores = reference_scores(RECORDS, exact_match_rows="all")
    assert [s["exact_match"] for s in scores] == [True, True, False, False]


def test_missing_or_none_meta_is_tolerated() -> None:
    records = [
        {"reference": "yes", "response": "Yes!"},
        {"reference": "no", "response": "no", "meta": None},
    ]
    assert [s["exact_match"] for s in reference_scores(records)] == [True, True]


def test_unknown_mode_names_allowed_values() -> None:
    with pytest.raises(ValueError, match="auto, flag, all"):
        reference_scores(RECORDS, exact_match_rows="some")


def test_summary_by_family() -> None:
    scores = reference_scores(RECORDS, exact_match_rows="all")
    summary = summarize_reference(scores, RECORDS)
    assert summary["n"] == 4
    assert summary["exact_match_n"] == 4
    assert summary["exact_match"] == pytest.approx(0.5)
    assert summary["exact_match_by_family"] == {"capitals": 1.0, "math": 0.0, "unknown": 1.0}
    expected_rouge = sum(s["rouge_l"] for s in scores) / 4
    assert summary["rouge_l"] == pytest.approx(expected_rouge)


def test_summary_without_eligible_rows() -> None:
    records = [_record("a long reference sentence here ok", "x")]
    summary = summarize_reference(reference_scores(records), records)
    assert summary["exact_match"] is None
    assert summary["exact_match_n"] == 0
    assert summary["exact_match_by_family"] == {}
    assert summary["n"] == 1


def test_summary_of_nothing() -> None:
    assert summarize_reference([], []) == {
        "exact_match": None,
        "exact_match_n": 0,
        "rouge_1": None,
        "rouge_2": None,
        "rouge_l": None,
        "bleu_4": None,
        "n": 0,
        "exact_match_by_family": {},
    }


def test_summary_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="2 scores for 1 records"):
        summarize_reference([{"exact_match": None, "rouge_l": 0.0}] * 2, RECORDS[:1])


def test_rouge_1_2_and_bleu_4_from_their_libraries():
    from llm_finetune.evaluation.judging import bleu4, corpus_bleu4, rouge

    same = rouge("the cat sat on the mat", "the cat sat on the mat")
    assert same == {"rouge_1": 1.0, "rouge_2": 1.0, "rouge_l": 1.0}
    partial = rouge("the cat sat", "the cat sat on the mat")
    assert 0 < partial["rouge_2"] < partial["rouge_1"] < 1
    assert bleu4("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert bleu4("dogs run", "the cat sat on the mat") < 0.1
    assert corpus_bleu4(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
