"""Bad-input suite for the data pipeline: every defect ends in a clear error or a counted quarantine.

Each test writes a small file into ``tmp_path`` (JSON array, JSON lines, CSV, Parquet or plain
text) and drives the public node path ``resolve_dataset_plan -> download_raw_data -> align_records``.
A defect must either

* raise an error whose message names the file, the row or line, and the field or reason, or
* be quarantined with dataset, file, row (plus line for JSON-lines and text files), field and
  reason, with ``rows_in == rows_kept + rows_quarantined`` and the quarantined row findable in
  the file it came from.

Configuration mistakes must fail in ``resolve_dataset_plan``, before any data is read.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_finetune.data.align import AlignmentError
from llm_finetune.data.registry import RegistryError
from llm_finetune.data.sources import SourceError
from llm_finetune.pipelines.data.nodes import align_records, download_raw_data, resolve_dataset_plan

LINE_FILES = (".jsonl", ".txt")


def sg(role: str, value) -> dict:
    """A sharegpt turn."""
    return {"from": role, "value": value}


def oa(role: str, content) -> dict:
    """An OpenAI message (also our custom-tag turns)."""
    return {"role": role, "content": content}


# (registry entry, a good row) per layout.
ALPACA = ({"format": "alpaca"}, {"instruction": "Say hi.", "input": "", "output": "Hi."})
SHAREGPT = ({"format": "sharegpt"}, {"conversations": [sg("human", "Hi"), sg("gpt", "Hello")]})
TAGGED = ({"format": "sharegpt", "columns": {"messages": "messages"},
           "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
          {"messages": [oa("user", "Hi"), oa("assistant", "Hello")]})
OPENAI = ({"format": "openai"}, {"messages": [oa("user", "Hi"), oa("assistant", "Hello")]})
KTO = ({"format": "sharegpt", "columns": {"messages": "messages", "kto_tag": "label"}, "tags": TAGGED[0]["tags"]},
       {"messages": [oa("user", "Hi"), oa("assistant", "Hello")], "label": True})  # LLaMA-Factory's kto_en_demo
PROMPT_COMPLETION = ({"format": "prompt_completion"}, {"prompt": "2+2?", "completion": "4"})
TEXT = ({"format": "text"}, {"text": "Some text."})
ALPACA_PAIR = ({"format": "alpaca", "ranking": True},
               {"instruction": "Pick one.", "input": "", "chosen": "Good.", "rejected": "Bad."})
SHAREGPT_PAIR = ({"format": "sharegpt", "ranking": True},
                 {"conversations": [sg("human", "Hi")], "chosen": sg("gpt", "Hello"), "rejected": sg("gpt", "Go.")})
MEDICALGPT = ({"format": "medicalgpt"}, {"system": "", "history": [], "question": "Headache?",
                                         "response_chosen": "Rest.", "response_rejected": "Ignore it."})
TRL = ({"format": "preference"}, {"prompt": "2+2?", "chosen": "4", "rejected": "5"})

GOOD_LINE = json.dumps(ALPACA[1]).encode()


def write(path: Path, rows: list) -> Path:
    """Write ``rows`` in the format of the file suffix; in line files, str / bytes items are raw lines."""
    if path.suffix in LINE_FILES:
        lines = [item if isinstance(item, bytes) else
                 (item if isinstance(item, str) else json.dumps(item)).encode() for item in rows]
        path.write_bytes(b"\n".join(lines) + b"\n")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def data_params(share: float = 1.0, **extra) -> dict:
    return {"datasets": ["bad"], "max_quarantine_share": share, "mix": {"strategy": "concat"}} | extra


def align(tmp_path: Path, path: Path, entry: dict, share: float = 1.0):
    """Run resolve -> download -> align on one registered dataset named ``bad``."""
    data = data_params(share)
    plan = resolve_dataset_plan(data, {"bad": {"path": str(path)} | entry})
    raw = download_raw_data(plan, str(tmp_path / "cache"))
    return align_records(raw, plan, data)


def locate(path: Path, entry: dict):
    """The row or line a quarantine entry points at, read straight from the file."""
    if entry.get("line"):
        text = path.read_bytes().split(b"\n")[entry["line"] - 1].decode("utf-8", errors="replace")
        if entry["row"] is None:
            return text
        return {"text": text} if path.suffix == ".txt" else json.loads(text)
    if path.suffix == ".json":
        return json.loads(path.read_text())[entry["row"]]
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))[entry["row"]]
    return pq.read_table(path).to_pylist()[entry["row"]]


def the_one_bad_row(tmp_path: Path, file_name: str, layout: tuple, bad) -> tuple[Path, dict]:
    """Write good, ``bad``, good; both good rows are kept, the bad one is the only quarantine entry."""
    entry, good = layout
    path = write(tmp_path / file_name, [good, bad, good])
    aligned, quarantined, report = align(tmp_path, path, entry)
    assert len(aligned) == 2
    [item] = quarantined
    check_accounted(path, aligned, quarantined, report)
    return path, item


def check_accounted(path: Path, aligned: list, quarantined: list, report: dict) -> None:
    """Nothing disappears uncounted, and every quarantined row can be found in its file."""
    counts = report["datasets"]["bad"]
    assert counts["rows_in"] == counts["rows_kept"] + counts["rows_quarantined"]
    assert (counts["rows_kept"], counts["rows_quarantined"]) == (len(aligned), len(quarantined))
    assert counts["quarantined_by_reason"] == dict(Counter(entry["reason"] for entry in quarantined))
    for entry in quarantined:
        assert {"dataset", "file", "row", "field", "reason", "detail", "record"} <= set(entry)
        assert entry["dataset"] == "bad" and entry["file"] == str(path)
        assert locate(path, entry) == entry["record"]


UNREADABLE_LINES = [
    pytest.param("bad.jsonl", ALPACA, b'{"instruction": "Say hi.", "output": ', "invalid JSON", r"column \d+",
                 id="jsonl-malformed-line"),
    pytest.param("bad.jsonl", ALPACA, b'["Say hi.", "Hi."]', "row is not an object", "a JSON list",
                 id="jsonl-line-is-array"),
    pytest.param("bad.jsonl", ALPACA, b"42", "row is not an object", "a JSON int", id="jsonl-line-is-number"),
    pytest.param("bad.jsonl", ALPACA, b'{"instruction": "caf\xe9", "output": "Hi."}', "not UTF-8", "byte offset 20",
                 id="jsonl-line-not-utf8"),
    pytest.param("bad.txt", ({"format": "text"}, "Some text."), b"caf\xe9 au lait", "not UTF-8", "byte offset 3",
                 id="text-line-not-utf8"),
]


@pytest.mark.parametrize(("file_name", "layout", "bad_line", "reason", "detail"), UNREADABLE_LINES)
def test_unreadable_line_is_quarantined_with_its_line_number(tmp_path, file_name, layout, bad_line, reason, detail):
    path, item = the_one_bad_row(tmp_path, file_name, layout, bad_line)
    assert (item["line"], item["row"], item["field"], item["reason"]) == (2, None, None, reason)
    assert re.search(detail, item["detail"])


ROW_DEFECTS = [
    pytest.param(ALPACA, "bad.json", "Say hi.", None, "row is not an object", id="json-row-not-object"),
    pytest.param(ALPACA, "bad.json", {"instruction": "Say hi.", "input": ""}, "output", "missing field",
                 id="alpaca-missing-output"),
    pytest.param(ALPACA, "bad.parquet", {"instruction": "Say hi.", "input": "", "output": None}, "output",
                 "missing field", id="alpaca-null-output-parquet"),
    pytest.param(ALPACA, "bad.jsonl", {"instruction": 7, "input": "", "output": "7"}, "instruction",
                 "not a string", id="alpaca-number-instruction"),
    pytest.param(ALPACA, "bad.json", {"instruction": ["Say", "hi"], "output": "Hi."}, "instruction",
                 "not a string", id="alpaca-list-instruction"),
    pytest.param(ALPACA, "bad.csv", {"instruction": "Say hi.", "input": "", "output": "   "}, "output",
                 "empty response", id="alpaca-blank-output-csv"),
    pytest.param(ALPACA, "bad.json", {"instruction": "Say hi.", "output": "Hi.", "history": "hello hi"}, "history",
                 "history is not a list of [user, assistant] pairs", id="alpaca-history-not-list"),
    pytest.param(ALPACA, "bad.json", {"instruction": "Say hi.", "output": "Hi.", "history": [["hello"]]},
                 "history[0]", "history is not a list of [user, assistant] pairs", id="alpaca-history-not-pairs"),
    pytest.param(ALPACA, "bad.json",
                 {"instruction": "Say hi.", "output": "Hi.", "history": [["q1", "a1"], ["q2", " "]]}, "history[1]",
                 "empty response", id="alpaca-history-blank-answer"),
    pytest.param(SHAREGPT, "bad.jsonl", {"conversations": [sg("human", "a"), sg("human", "b"), sg("gpt", "c")]},
                 "conversations[1]", "broken role order", id="sharegpt-two-user-turns"),
    pytest.param(SHAREGPT, "bad.jsonl",
                 {"conversations": [sg("system", "Be brief."), sg("human", "a"), sg("human", "b"), sg("gpt", "c")]},
                 "conversations[2]", "broken role order", id="sharegpt-system-then-two-user-turns"),
    pytest.param(SHAREGPT, "bad.jsonl",
                 {"conversations": [sg("human", "a"), sg("gpt", "b"), sg("observation", "{}"), sg("gpt", "c")]},
                 "conversations[2]", "observation without a function call", id="sharegpt-observation-without-call"),
    pytest.param(SHAREGPT, "bad.jsonl", {"conversations": [sg("observation", "{}"), sg("gpt", "c")]},
                 "conversations[0]", "observation without a function call", id="sharegpt-starts-with-observation"),
    pytest.param(SHAREGPT, "bad.jsonl", {"conversations": [sg("human", "a"), sg("gpt", "b"), sg("human", "c")]},
                 "conversations[2]", "last turn is not an answer", id="sharegpt-ends-with-user"),
    pytest.param(SHAREGPT, "bad.jsonl", {"conversations": [sg("human", "a"), sg("bot", "b")]},
                 "conversations[1].from", "unknown role", id="sharegpt-unknown-role"),
    pytest.param(SHAREGPT, "bad.jsonl", {"conversations": [sg(["human"], "a"), sg("gpt", "b")]},
                 "conversations[0].from", "unknown role", id="sharegpt-role-not-a-string"),
    pytest.param(SHAREGPT, "bad.jsonl", {"conversations": [sg("human", "a"), sg("gpt", ["b"])]},
                 "conversations[1].value[0]", "content part is not an object", id="sharegpt-content-parts-not-objects"),
    pytest.param(SHAREGPT, "bad.jsonl", {"conversations": [sg("human", "a"), sg("gpt", 7)]},
                 "conversations[1]", "content is not a string", id="sharegpt-content-not-string"),
    pytest.param(OPENAI, "bad.jsonl", {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "..."}}]}, {"role": "assistant", "content": "b"}]},
                 "messages[0].content[0]", "input_audio part: multimodal content is not supported",
                 id="openai-audio-part"),
    pytest.param(SHAREGPT, "bad.jsonl", {"conversations": []}, "conversations", "empty conversation",
                 id="sharegpt-empty-conversation"),
    pytest.param(SHAREGPT, "bad.jsonl", {"conversations": "human: a"}, "conversations", "not a list of turns",
                 id="sharegpt-conversations-not-list"),
    pytest.param(SHAREGPT, "bad.jsonl", {"conversations": [sg("human", "a"), sg("gpt", "b")], "tools": "{not json"},
                 "tools", "tools are not valid JSON", id="sharegpt-tools-not-json"),
    pytest.param(TAGGED, "bad.jsonl", {"messages": [oa("user", "a"), oa("gpt", "b")]}, "messages[1].role",
                 "unknown role", id="custom-tags-wrong-role-name"),
    pytest.param(TAGGED, "bad.jsonl", {"messages": [oa("user", "a"), {"role": "assistant", "text": "b"}]},
                 "messages[1].content", "missing field", id="custom-tags-wrong-content-key"),
    pytest.param(OPENAI, "bad.jsonl",
                 {"messages": [oa("user", "a"), oa("assistant", "b"), oa("tool", "{}"), oa("assistant", "c")]},
                 "messages[2]", "observation without a function call", id="openai-tool-without-call"),
    pytest.param(OPENAI, "bad.jsonl", {"messages": [oa("user", "a"), oa("assistant", None)]}, "messages[1]",
                 "content is not a string", id="openai-null-content"),
    pytest.param(OPENAI, "bad.jsonl",
                 {"messages": [oa("system", "s"), oa("user", "a"), oa("assistant", "b"), oa("tool", "{}"),
                               oa("assistant", "c")]},
                 "messages[3]", "observation without a function call", id="openai-system-then-tool-without-call"),
    pytest.param(OPENAI, "bad.jsonl",
                 {"messages": [oa("user", "a"), {"role": "assistant", "content": None, "tool_calls": ["get_weather"]}]},
                 "messages[1].tool_calls", "tool call is not an object", id="openai-tool-calls-not-objects"),
    pytest.param(KTO, "bad.json", KTO[1] | {"label": "maybe"}, "label", "KTO label is not a boolean",
                 id="kto-label-not-boolean"),
    pytest.param(KTO, "bad.jsonl", {"messages": KTO[1]["messages"]}, "label", "KTO label is not a boolean",
                 id="kto-label-missing"),
    pytest.param(KTO, "bad.jsonl", KTO[1] | {"label": False}, "label", "undesirable answer (KTO label false)",
                 id="kto-undesirable-never-trained-by-sft"),
    pytest.param(PROMPT_COMPLETION, "bad.json", {"prompt": "2+2?", "completion": ""}, "completion", "empty response",
                 id="prompt-completion-empty-completion"),
    pytest.param(PROMPT_COMPLETION, "bad.json", {"prompt": "2+2?", "completion": 4}, "completion", "not a string",
                 id="prompt-completion-number-completion"),
    pytest.param(PROMPT_COMPLETION, "bad.json", {"prompt": [oa("user", " ")], "completion": "4"}, "prompt[0]",
                 "empty turn", id="prompt-completion-blank-prompt-turn"),
    pytest.param(TEXT, "bad.jsonl", {"text": 5}, "text", "not a string", id="text-not-string"),
    pytest.param(TEXT, "bad.parquet", {"text": "  "}, "text", "empty field", id="text-blank-parquet"),
    pytest.param(ALPACA_PAIR, "bad.json", {"instruction": "Pick one.", "input": "", "chosen": "Good."}, "rejected",
                 "missing field", id="alpaca-pair-missing-rejected"),
    pytest.param(ALPACA_PAIR, "bad.json", {"instruction": "Pick one.", "input": "", "chosen": "Same.",
                                           "rejected": "Same."}, "rejected", "chosen equals rejected",
                 id="alpaca-pair-chosen-equals-rejected"),
    pytest.param(SHAREGPT_PAIR, "bad.jsonl",
                 {"conversations": [sg("human", "Hi")], "chosen": sg("system", "x"), "rejected": sg("gpt", "y")},
                 "chosen", "answer is not from the assistant", id="sharegpt-pair-chosen-is-system-turn"),
    pytest.param(MEDICALGPT, "bad.jsonl", MEDICALGPT[1] | {"response_chosen": ""}, "response_chosen",
                 "empty response", id="medicalgpt-empty-chosen"),
    pytest.param(TRL, "bad.jsonl", {"chosen": [oa("user", "a"), oa("assistant", "x")],
                                    "rejected": [oa("user", "b"), oa("assistant", "y")]},
                 "chosen", "no prompt", id="trl-no-prompt-no-shared-prefix"),
    pytest.param(TRL, "bad.jsonl", {"prompt": "2+2?", "chosen": [oa("assistant", "4"), oa("assistant", "!")],
                                    "rejected": "5"},
                 "chosen", "answer is not a single turn", id="trl-chosen-two-turns"),
]


@pytest.mark.parametrize(("layout", "file_name", "bad", "field", "reason"), ROW_DEFECTS)
def test_bad_row_is_quarantined_with_field_and_reason(tmp_path, layout, file_name, bad, field, reason):
    path, item = the_one_bad_row(tmp_path, file_name, layout, bad)
    assert (item["row"], item["field"], item["reason"]) == (1, field, reason)
    assert item.get("line") == (2 if path.suffix in LINE_FILES else None)


def test_llamafactory_sharegpt_ranking_with_chosen_not_a_turn(tmp_path):
    path = write(tmp_path / "dpo.json", [SHAREGPT_PAIR[1], SHAREGPT_PAIR[1] | {"chosen": "Hello"}])
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"bad": {"file_name": "dpo.json", "formatting": "sharegpt", "ranking": True,
                                        "columns": {"messages": "conversations", "chosen": "chosen",
                                                    "rejected": "rejected"}}}))
    data = data_params(dataset_info=str(info))
    plan = resolve_dataset_plan(data, {})
    aligned, quarantined, report = align_records(download_raw_data(plan, str(tmp_path / "cache")), plan, data)
    assert [(q["row"], q["field"], q["reason"]) for q in quarantined] == [(1, "chosen", "answer is not a turn object")]
    check_accounted(path, aligned, quarantined, report)


def test_mixed_file_keeps_good_rows_in_order_and_counts_bad_ones(tmp_path):
    rows = [{"instruction": "A", "output": "a"}, b"{broken", {"instruction": "B", "output": "b"},
            {"instruction": "no output"}, b"[1, 2]", {"instruction": "C", "output": "c"},
            b'{"instruction": "\xff", "output": "x"}', b"", {"instruction": "D", "output": "d"}]
    path = write(tmp_path / "mixed.jsonl", rows)
    aligned, quarantined, report = align(tmp_path, path, {"format": "alpaca"})
    assert [record["meta"]["instruction"] for record in aligned] == ["A", "B", "C", "D"]
    assert sorted(entry["line"] for entry in quarantined) == [2, 4, 5, 7]
    counts = report["datasets"]["bad"]
    assert (counts["rows_in"], counts["rows_kept"], counts["rows_quarantined"]) == (8, 4, 4)
    assert counts["quarantined_by_reason"] == {"invalid JSON": 1, "missing field": 1, "row is not an object": 1,
                                               "not UTF-8": 1}
    check_accounted(path, aligned, quarantined, report)


WHOLE_INPUT_ERRORS = [
    pytest.param("bad.json", b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "c" "output": "d"}\n]', 1.0,
                 SourceError, r"<file>: invalid JSON at line 3, column 21: Expecting ',' delimiter",
                 id="json-array-syntax-error"),
    pytest.param("bad.json", b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "\xff", "output": "d"}\n]', 1.0,
                 SourceError, r"<file>: not UTF-8 text \(byte 56, line 3\)", id="json-array-not-utf8"),
    pytest.param("bad.csv", b"instruction,input,output\na,b,c\nd,e\n", 1.0, SourceError,
                 r"<file>: CSV line 3 has 2 fields, the header 3 .*set file_type: text", id="csv-wrong-field-count"),
    pytest.param("bad.json", b"\x1f\x8b\x08\x00" + bytes(range(40)), 1.0, SourceError,
                 r"<file>: not a text, JSON, JSON lines, CSV or Parquet file: it holds gzip-compressed data",
                 id="gzip-file"),
    pytest.param("bad.json", b"\x00\x01\x02 some binary \x00 blob", 1.0, SourceError,
                 r"<file>: not a text.*binary data \(NUL bytes\)", id="binary-file"),
    pytest.param("bad.jsonl", b"", 1.0, AlignmentError, r"Dataset 'bad' \(<file>\) is empty", id="empty-file"),
    pytest.param("bad.json", b"[]", 1.0, AlignmentError, r"Dataset 'bad' \(<file>\) is empty", id="empty-list"),
    pytest.param("bad.csv", b"instruction,input,answer\na,,b\nc,,d\n", 1.0, AlignmentError,
                 r"Dataset 'bad' \(<file>\): required column 'output' is missing from every row .*`columns:`",
                 id="required-column-missing"),
    pytest.param("bad.jsonl", b'{"instruction": "a", "output": " "}\n{"instruction": "b", "output": ""}\n', 1.0,
                 AlignmentError, r"no usable rows, all 2 were quarantined: \{'empty response': 2\}\. "
                 r"First: <file> line 1, field 'output': empty response", id="every-row-bad"),
    pytest.param("bad.json", json.dumps([ALPACA[1], {"instruction": "a"}, {"instruction": "b"}]).encode(), 0.5,
                 AlignmentError, r"66\.7% of rows were quarantined, above data\.max_quarantine_share=50\.0%.*"
                 r"First: <file> row 1, field 'output': missing field", id="quarantine-share-exceeded"),
]


@pytest.mark.parametrize(("file_name", "content", "share", "error", "pattern"), WHOLE_INPUT_ERRORS)
def test_whole_input_error_names_file_and_place(tmp_path, file_name, content, share, error, pattern):
    path = tmp_path / file_name
    path.write_bytes(content)
    with pytest.raises(error, match=pattern.replace("<file>", re.escape(str(path)))):
        align(tmp_path, path, {"format": "alpaca"}, share=share)


CONFIG_ERRORS = [
    pytest.param(["nope"], {"bad": {"path": "data.json"}}, None, r"Unknown dataset 'nope'; registered: \['bad'\]",
                 id="unknown-dataset"),
    pytest.param(["bad"], {"bad": {"path": "missing.json"}}, None, r"Dataset 'bad': \S*missing\.json does not exist",
                 id="missing-path"),
    pytest.param(["bad"], {"bad": {"path": "data.json", "format": "xml"}}, None,
                 r"Dataset 'bad': format 'xml' is not one of", id="unknown-format"),
    pytest.param(["bad"], {"bad": {"path": "data.json", "fromat": "alpaca"}}, None,
                 r"entry 'bad' has unknown keys \['fromat'\]", id="unknown-registry-key"),
    pytest.param(["bad"], {"bad": {"path": "data.json", "format": "text", "ranking": True}}, None,
                 r"Dataset 'bad': format 'text' with ranking is not supported", id="text-with-ranking"),
    pytest.param(["lf"], {}, {"lf": {"ms_hub_url": "AI-ModelScope/alpaca"}},
                 r"'lf' has no file_name or hf_hub_url \(only \['ms_hub_url'\]: ModelScope",
                 id="llamafactory-ms-hub-only"),
    pytest.param(["lf"], {}, {"lf": {"file_name": "data.json", "formatting": "sharegpt",
                                     "columns": {"messages": "conversations", "images": "images"}}},
                 r"'lf' has \['images'\] columns; multimodal data is not supported", id="llamafactory-images"),
    pytest.param(["sft", "dpo"], {"sft": {"path": "data.json"}, "dpo": {"path": "data.json", "format": "preference"}},
                 None, r"mixes record kinds \['conversation', 'preference'\]: sft=conversation, dpo=preference",
                 id="mixed-record-kinds"),
]


@pytest.mark.parametrize(("datasets", "registry", "info", "pattern"), CONFIG_ERRORS)
def test_config_error_is_raised_before_reading_data(tmp_path, datasets, registry, info, pattern):
    (tmp_path / "data.json").write_bytes(b"\xff unreadable: resolution must not read it")
    registry = {name: entry | {"path": str(tmp_path / entry["path"])} for name, entry in registry.items()}
    data = data_params(datasets=datasets)
    if info is not None:
        (tmp_path / "dataset_info.json").write_text(json.dumps(info))
        data["dataset_info"] = str(tmp_path / "dataset_info.json")
    with pytest.raises(RegistryError, match=pattern):
        resolve_dataset_plan(data, registry)


def test_text_with_commas_is_read_as_text_and_a_ragged_csv_suggests_file_type(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("Once upon a time, there was a king.\nHe lived in a castle, with a cat, and a dog.\n")
    aligned, quarantined, _ = align(tmp_path, path, {"format": "text"})
    assert [r["text"] for r in aligned] == ["Once upon a time, there was a king.", "He lived in a castle, with a cat, and a dog."]
    assert [r["meta"]["line"] for r in aligned] == [1, 2] and not quarantined
    with pytest.raises(SourceError, match=rf"{re.escape(str(path))}: CSV line 2 .*set file_type: text"):
        align(tmp_path, path, {"format": "alpaca"})


def test_share_error_names_the_first_defect_in_file_order(tmp_path):
    path = write(tmp_path / "bad.jsonl", [ALPACA[1], b"{broken", {"instruction": "no output"}])
    with pytest.raises(AlignmentError, match=rf"First: {re.escape(str(path))} line 2\b.*invalid JSON"):
        align(tmp_path, path, {"format": "alpaca"}, share=0.5)


def test_max_rows_also_caps_unreadable_lines(tmp_path):
    path = write(tmp_path / "bad.jsonl", [ALPACA[1], ALPACA[1], ALPACA[1], b"{broken"])
    aligned, quarantined, report = align(tmp_path, path, {"format": "alpaca", "max_rows": 2})
    assert (len(aligned), quarantined, report["datasets"]["bad"]["rows_in"]) == (2, [], 2)


def test_folder_source_names_the_file_and_line_of_a_bad_row(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    write(folder / "a.jsonl", [ALPACA[1], ALPACA[1]])
    bad = write(folder / "b.jsonl", [ALPACA[1], {"instruction": "Say hi.", "output": " "}])
    aligned, quarantined, _ = align(tmp_path, folder, {"format": "alpaca"})
    [item] = quarantined
    assert (item["file"], item.get("line"), item["field"], item["reason"]) == (str(bad), 2, "output", "empty response")
    assert locate(bad, item) == {key: value for key, value in item["record"].items() if key != "_file"}
