"""LLaMA-Factory entries that were read wrongly before: KTO feedback (``kto_tag``) and pretraining text.

The entries are LLaMA-Factory's own, from its ``dataset_info.json`` (``kto_en_demo``, ``c4_demo``,
``wiki_demo``); the rows are written here in their layouts.
"""

from __future__ import annotations

import json

import pytest

from llm_finetune.data.align import AlignmentError
from llm_finetune.pipelines.data.nodes import align_records, download_raw_data, resolve_dataset_plan
from tests.conftest import real_data


def _info(tmp_path, name: str, rows_text: str) -> str:
    entry = json.loads(real_data("dataset_info.json").read_text())[name]
    (tmp_path / entry["file_name"]).write_text(rows_text)
    (tmp_path / "dataset_info.json").write_text(json.dumps({name: entry}))
    return str(tmp_path / "dataset_info.json")


def _align(info: str, name: str, **data):
    params = {"datasets": [name], "dataset_info": info, "max_quarantine_share": 0.0, "mix": {}} | data
    plan = resolve_dataset_plan(params, {})
    return plan, *align_records(download_raw_data(plan, "unused"), plan, params)


def kto_rows(count: int = 6) -> str:
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": f"{'Good' if i % 2 == 0 else 'Bad'} answer {i}."}],
             "label": i % 2 == 0} for i in range(count)]
    return json.dumps(rows)


def test_kto_rows_keep_their_label_and_sft_never_trains_on_an_undesirable_answer(tmp_path):
    """Before, the kto_tag column was dropped: sft trained on the answers labelled undesirable."""
    info = _info(tmp_path, "kto_en_demo", kto_rows())
    plan, records, quarantined, report = _align(info, "kto_en_demo")
    assert plan[0]["kind"] == "conversation"
    assert [r["label"] for r in records] == [True, True, True]
    assert all(r["messages"][-1]["content"].startswith("Good") for r in records)
    assert [(q["row"], q["field"], q["reason"]) for q in quarantined] == [
        (1, "label", "undesirable answer (KTO label false)"), (3, "label", "undesirable answer (KTO label false)"),
        (5, "label", "undesirable answer (KTO label false)")]
    assert report["total"]["undesirable_rows"] == 3 and report["total"]["rows_quarantined"] == 3
    _, kept, none, _ = _align(info, "kto_en_demo", undesirable="keep")  # for a stage that uses the label
    assert [r["label"] for r in kept] == [True, False] * 3 and none == []


def test_a_kto_label_that_is_not_a_boolean_is_a_counted_defect(tmp_path):
    rows = json.loads(kto_rows(4))
    rows[2]["label"] = "maybe"
    info = _info(tmp_path, "kto_en_demo", json.dumps(rows))
    with pytest.raises(AlignmentError, match=r"row 2, field 'label': KTO label is not a boolean \(got 'maybe'\)"):
        _align(info, "kto_en_demo")


@pytest.mark.parametrize("name, text, first", [
    ("c4_demo", "\n".join(json.dumps({"text": f"Document {i} about rivers."}) for i in range(5)) + "\n",
     "Document 0 about rivers."),
    ("wiki_demo", "\n".join(f"Article {i} about owls." for i in range(5)) + "\n", "Article 0 about owls."),
])
def test_llamafactorys_pretraining_entries_are_text_for_pt(tmp_path, name, text, first):
    """Before, {columns: {prompt: text}} resolved as alpaca and stopped: "required column 'output' is missing"."""
    plan, records, quarantined, _ = _align(_info(tmp_path, name, text), name)
    assert (plan[0]["format"], plan[0]["kind"]) == ("text", "text")
    assert quarantined == [] and len(records) == 5 and records[0]["text"] == first
