import pytest

from llm_finetune.data.align import AlignmentError, align_alpaca, alignment_report


def test_alpaca_row_becomes_a_canonical_conversation():
    rows = [{"instruction": "Convert to uppercase.", "input": "hello", "output": "HELLO", "family": "uppercase"}]
    aligned, quarantined = align_alpaca(rows)
    assert quarantined == []
    assert aligned == [{
        "messages": [{"role": "user", "content": "Convert to uppercase.\n\nhello"},
                     {"role": "assistant", "content": "HELLO"}],
        "system": None, "tools": None,
        "meta": {"row": 0, "instruction": "Convert to uppercase.", "input": "hello", "family": "uppercase"},
    }]


def test_bad_rows_are_quarantined_with_row_and_reason():
    rows = [
        {"instruction": "ok", "input": "", "output": "fine"},
        {"instruction": "no output", "input": ""},
        {"instruction": "empty", "input": "", "output": "   "},
        {"instruction": 3, "input": "", "output": "x"},
        {"instruction": "bad input", "input": ["a"], "output": "x"},
    ]
    aligned, quarantined = align_alpaca(rows)
    assert len(aligned) == 1
    assert [(q["row"], q["reason"]) for q in quarantined] == [
        (1, "field 'output' is NoneType, expected a string"),
        (2, "field 'output' is empty"),
        (3, "field 'instruction' is int, expected a string"),
        (4, "field 'input' is list, expected a string"),
    ]
    assert quarantined[0]["record"] == rows[1]
    report = alignment_report(len(rows), aligned, quarantined, max_share=0.9)
    assert report["rows_in"] == 5 and report["rows_kept"] == 1 and report["rows_quarantined"] == 4


def test_too_many_quarantined_rows_stop_the_run():
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}]
    aligned, quarantined = align_alpaca(rows)
    with pytest.raises(AlignmentError, match="50.0% of rows were quarantined"):
        alignment_report(2, aligned, quarantined, max_share=0.1)


def test_missing_required_column_and_column_mapping():
    with pytest.raises(AlignmentError, match="'output'"):
        align_alpaca([{"instruction": "a", "answer": "b"}])
    aligned, _ = align_alpaca([{"instruction": "a", "answer": "b"}], columns={"output": "answer"})
    assert aligned[0]["messages"][1]["content"] == "b"
