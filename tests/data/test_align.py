"""Every layout aligns to the canonical schema; defects are quarantined with field and reason."""

import json

import pytest

from llm_finetune.data.align import AlignmentError, align_dataset, alignment_report, record_kind


def align(rows, fmt, **spec):
    raw = {"origin": "f.json", "records": rows, "lines": None, "unreadable": []}
    return align_dataset("ds", raw, {"format": fmt, **spec})


def test_alpaca_row_becomes_a_canonical_conversation():
    rows = [{"instruction": "Convert to uppercase.", "input": "hello", "output": "HELLO", "family": "uppercase"}]
    aligned, quarantined = align(rows, "alpaca")
    assert quarantined == []
    assert aligned == [{
        "messages": [{"role": "user", "content": "Convert to uppercase.\n\nhello"},
                     {"role": "assistant", "content": "HELLO"}],
        "system": None, "tools": None,
        "meta": {"instruction": "Convert to uppercase.", "input": "hello", "family": "uppercase", "dataset": "ds",
                 "row": 0},
    }]


def test_alpaca_history_system_and_llamafactory_column_names():
    rows = [{"q": "And 3+3?", "a": "6", "sys": "Be brief.", "hist": [["2+2?", "4"]]}]
    aligned, _ = align(rows, "alpaca", columns={"prompt": "q", "response": "a", "system": "sys", "history": "hist"})
    assert [m["role"] for m in aligned[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert aligned[0]["messages"][0]["content"] == "2+2?" and aligned[0]["system"] == "Be brief."
    aliased, _ = align([{"instruction": "a", "answer": "b"}], "alpaca", columns={"output": "answer"})
    assert aliased[0]["messages"][1]["content"] == "b"


def test_sharegpt_with_tools_function_calls_and_a_system_turn():
    rows = [{"conversations": [
        {"from": "system", "value": "You call tools."},
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
        {"from": "observation", "value": '{"temp": 3}'},
        {"from": "gpt", "value": "It is 3 degrees."}], "tools": '[{"name": "weather"}]'}]
    aligned, quarantined = align(rows, "sharegpt")
    assert not quarantined
    record = aligned[0]
    assert [m["role"] for m in record["messages"]] == ["user", "function_call", "observation", "assistant"]
    assert record["system"] == "You call tools." and json.loads(record["tools"]) == [{"name": "weather"}]


def test_sharegpt_custom_tags_and_openai_messages_with_tool_calls():
    tags = {"role_tag": "speaker", "content_tag": "text", "user_tag": "Q", "assistant_tag": "A"}
    aligned, _ = align([{"dialog": [{"speaker": "Q", "text": "hi"}, {"speaker": "A", "text": "hello"}]}],
                       "sharegpt", columns={"messages": "dialog"}, tags=tags)
    assert aligned[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    openai = [{"messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "2+2 with the tool"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "add"}}]},
        {"role": "tool", "content": "4"}, {"role": "assistant", "content": "4"}]}]
    aligned, quarantined = align(openai, "openai")
    assert not quarantined
    assert [m["role"] for m in aligned[0]["messages"]] == ["user", "function_call", "observation", "assistant"]
    assert json.loads(aligned[0]["messages"][1]["content"]) == {"name": "add"} and aligned[0]["system"] == "sys"


def test_prompt_completion_strings_and_message_lists_and_text():
    aligned, _ = align([{"prompt": "2+2=", "completion": "4"},
                        {"prompt": [{"role": "user", "content": "hi"}],
                         "completion": [{"role": "assistant", "content": "hello"}]}], "prompt_completion")
    assert [r["messages"][1]["content"] for r in aligned] == ["4", "hello"]
    text, _ = align([{"text": "Once upon a time."}], "text")
    assert text[0]["text"] == "Once upon a time." and record_kind("text", False) == "text"


@pytest.mark.parametrize("fmt, spec, row, expected", [
    ("alpaca", {"ranking": True}, {"instruction": "Fix", "input": "teh", "output": "the", "chosen": "the",
                                   "rejected": "teh"}, ("Fix\n\nteh", "the", "teh")),
    ("sharegpt", {"ranking": True}, {"conversations": [{"from": "human", "value": "Q"}],
                                     "chosen": {"from": "gpt", "value": "good"},
                                     "rejected": {"from": "gpt", "value": "bad"}}, ("Q", "good", "bad")),
    ("preference", {}, {"prompt": "Q", "chosen": "good", "rejected": "bad"}, ("Q", "good", "bad")),
    ("preference", {}, {"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}],
                        "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "bad"}]},
     ("Q", "good", "bad")),
    ("medicalgpt", {}, {"system": "", "history": [], "question": "Q", "response_chosen": "good",
                        "response_rejected": "bad"}, ("Q", "good", "bad")),
], ids=["book-alpaca", "llamafactory-sharegpt", "trl-explicit", "trl-implicit-prompt", "medicalgpt"])
def test_every_preference_layout_aligns_to_prompt_chosen_rejected(fmt, spec, row, expected):
    aligned, quarantined = align([row], fmt, **spec)
    assert not quarantined
    record = aligned[0]
    assert (record["prompt"][-1]["content"], record["chosen"]["content"], record["rejected"]["content"]) == expected
    assert record["chosen"]["role"] == record["rejected"]["role"] == "assistant"


def test_identical_pairs_are_quarantined_and_counted():
    """A tie carries no preference: it must not reach rm / dpo training (it did before: kept and only counted)."""
    rows = [{"instruction": "a", "chosen": "same", "rejected": "same"}, {"instruction": "b", "chosen": "x",
                                                                         "rejected": "y"}]
    aligned, quarantined = align(rows, "alpaca", ranking=True)
    assert [r["chosen"]["content"] for r in aligned] == ["x"]
    assert [(q["row"], q["field"], q["reason"]) for q in quarantined] == [(0, "rejected", "chosen equals rejected")]
    report = alignment_report("ds", 2, aligned, quarantined, max_share=0.5)
    assert report["identical_pairs"] == 1 and report["rows_kept"] == 1 and report["rows_quarantined"] == 1


def test_bad_rows_are_quarantined_with_row_field_and_reason():
    rows = [
        {"instruction": "ok", "input": "", "output": "fine"},
        {"instruction": "no output", "input": ""},
        {"instruction": "empty", "input": "", "output": "   "},
        {"instruction": 3, "input": "", "output": "x"},
        {"instruction": "bad input", "input": ["a"], "output": "x"},
        "not an object",
    ]
    aligned, quarantined = align(rows, "alpaca")
    assert len(aligned) == 1
    assert [(q["row"], q["field"], q["reason"]) for q in quarantined] == [
        (1, "output", "missing field"), (2, "output", "empty response"), (3, "instruction", "not a string"),
        (4, "input", "not a string"), (5, None, "row is not an object")]
    assert quarantined[0]["record"] == rows[1] and quarantined[0]["file"] == "f.json"
    report = alignment_report("ds", len(rows), aligned, quarantined, max_share=0.9)
    assert report["quarantined_by_reason"] == {"missing field": 1, "empty response": 1, "not a string": 2,
                                               "row is not an object": 1}


def test_unreadable_lines_are_quarantined_with_their_line_numbers():
    raw = {"origin": "f.jsonl", "records": [{"instruction": "a", "output": "b"}], "lines": [3],
           "unreadable": [{"line": 2, "reason": "invalid JSON", "detail": "Expecting value", "text": "{oops"}]}
    aligned, quarantined = align_dataset("ds", raw, {"format": "alpaca"})
    assert aligned[0]["meta"]["row"] == 0
    assert quarantined == [{"dataset": "ds", "file": "f.jsonl", "row": None, "line": 2, "field": None,
                            "reason": "invalid JSON", "detail": "Expecting value", "record": "{oops"}]


def test_whole_input_errors_stop_the_run():
    with pytest.raises(AlignmentError, match="is empty"):
        align([], "alpaca")
    with pytest.raises(AlignmentError, match="required column 'output' is missing from every row"):
        align([{"instruction": "a", "answer": "b"}], "alpaca")
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}]
    aligned, quarantined = align(rows, "alpaca")
    with pytest.raises(AlignmentError, match=r"50.0% of rows were quarantined.*f.json row 1, field 'output'"):
        alignment_report("ds", 2, aligned, quarantined, max_share=0.1)
    with pytest.raises(AlignmentError, match="no usable rows"):
        alignment_report("ds", 1, [], quarantined[:1], max_share=1.0)
