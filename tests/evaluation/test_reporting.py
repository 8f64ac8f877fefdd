import pandas as pd
import pytest

from llm_finetune.evaluation import reporting


def row(score=None, em=None, family="f", rouge=0.5, response="r"):
    data = {"instruction": "i", "input": "", "output": "o", "model_response": response, "family": family,
            "exact_match": em, "rouge_l": rouge}
    return data if score == "absent" else data | {"llm_score": score}


def test_score_stats_count_only_scored_rows_and_bin_100_into_the_last_decile():
    stats = reporting.score_stats([row(100), row(85), row(None), row(0)])
    assert stats["llm"]["n_scored"] == 3 and stats["llm"]["n_total"] == 4
    assert stats["llm"]["mean"] == pytest.approx(185 / 3) and stats["llm"]["median"] == 85
    assert stats["llm"]["histogram_0_100_by_10"] == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert reporting.score_stats([row("absent")]) == {}


def test_family_table_reports_exact_match_per_family_with_delta():
    base = [row(em=False, family="a"), row(em=True, family="b"), row(em=None, family="c")]
    tuned = [row(em=True, family="a"), row(em=True, family="b"), row(em=None, family="c")]
    table = reporting.family_table({"base": base, "tuned": tuned})
    assert table.to_dict("records") == [
        {"family": "a", "base_n": 1, "base_exact_match": 0.0, "tuned_n": 1, "tuned_exact_match": 1.0, "delta": 1.0},
        {"family": "b", "base_n": 1, "base_exact_match": 1.0, "tuned_n": 1, "tuned_exact_match": 1.0, "delta": 0.0},
    ]


def test_examples_rank_by_the_judge_score_and_keep_unscored_rows_out():
    tuned = [row(10, response="bad"), row(None, response="unscored"), row(90, response="good"), row(50)]
    base = [row(0, response=f"base{i}") for i in range(4)]
    table = reporting.examples_table(base, tuned, n=1)
    assert list(table["rank"]) == ["worst", "best"]
    assert list(table["response"]) == ["bad", "good"] and list(table["base_response"]) == ["base0", "base2"]
    assert set(table["score_name"]) == {"llm_score"}


def test_examples_fall_back_to_rouge_when_no_judge_scored():
    table = reporting.examples_table(None, [row("absent", rouge=0.2), row("absent", rouge=0.9)], n=1)
    assert list(table["score"]) == [20.0, 90.0] and "base_response" not in table


def test_markdown_report_and_histogram():
    summary = reporting.summary({"exact_match": 0.1, "n": 2}, {"exact_match": 0.6, "n": 2}, {})
    text = reporting.markdown_report(summary, pd.DataFrame(), reporting.examples_table(None, [], 5))
    assert "| exact_match | 0.1000 | 0.6000 | 0.5000 |" in text and "(no verifiable rows)" in text
    figure = reporting.score_histogram({"base": [row(10)], "tuned": [row(90), row(None)]})
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels == ["base (n=1)", "tuned (n=1)"]


def test_markdown_cells_stay_on_one_line():
    tuned = [row(80, response="line one\nline two | pipe" + "x" * 400)]
    text = reporting.markdown_report(reporting.summary({"n": 1}, {"n": 1}, {}), pd.DataFrame(),
                                     reporting.examples_table(None, tuned, 1))
    table_rows = [line for line in text.splitlines() if line.startswith("| best") or line.startswith("| worst")]
    assert len(table_rows) == 2 and "line one<br>line two \\| pipe" in table_rows[0] and "..." in table_rows[0]
