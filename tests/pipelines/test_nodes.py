"""Node functions of the data, sft and evaluation pipelines, on the tiny model."""

import json

import pytest

from llm_finetune.evaluation.judging import JudgeEndpointError
from llm_finetune.hooks import flatten_metrics
from llm_finetune.models.materialize import prepare_base_model
from llm_finetune.pipelines.data.nodes import (
    align_records,
    check_contamination,
    download_raw_data,
    resolve_dataset_plan,
    split_dataset,
)
from llm_finetune.pipelines.evaluation.nodes import build_report, generate_tuned_responses, judge_responses, plot_report
from llm_finetune.pipelines.sft.nodes import preflight_checks
from llm_finetune.pipelines.tokenize.nodes import tokenize_split
from tests.conftest import DEMO_DATA, alpaca_record
from tests.evaluation.judging.fake_servers import closed_port_url

DATA = {"datasets": ["demo"], "max_rows": 200, "max_quarantine_share": 0.05,
        "mix": {"strategy": "concat"}}
REGISTRY = {"demo": {"path": str(DEMO_DATA), "format": "alpaca"}}
PLAN = [{"name": "demo", "kind": "conversation"}]
TRAIN = {"seed": 1, "precision": "fp32", "epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "lora": {}}
TOKENIZE = {"template": "alpaca", "cutoff_len": 64, "loss_on": "assistant", "truncation": "truncate_response",
            "packing": "none"}
JUDGE = {"reference": {"exact_match_rows": "auto", "max_reference_words": 4}, "llm": None, "local": None}


def test_data_nodes_on_the_demo_file():
    plan = resolve_dataset_plan(DATA, REGISTRY)
    raw = download_raw_data(plan, "unused-cache")
    aligned, quarantined, report = align_records(raw, plan, DATA)
    assert report["datasets"]["demo"] == {"rows_in": 200, "rows_kept": 200, "rows_quarantined": 0,
                                          "quarantined_by_reason": {}, "identical_pairs": 0,
                                          "undesirable_rows": 0, "max_rows": 200, "records_in_source": 1415}
    assert report["total"]["rows_mixed"] == 200 and report["total"]["kind"] == "conversation"
    train, val, test = split_dataset(aligned, {"mode": "ordered", "train_fraction": 0.85, "test_fraction": 0.1,
                                               "seed": 3})
    assert (len(train), len(val), len(test)) == (170, 10, 20)
    assert {"family", "verifiable", "dataset", "row"} <= set(test[0]["meta"])
    kept, summary, pairs = check_contamination(train + [test[0]], val, test, {"threshold": 0.95,
                                                                              "drop_train_duplicates": True})
    assert summary["exact_pairs"] >= 1 and summary["train_rows_dropped"] >= 1
    assert test[0] not in kept and len(kept) == len(train) + 1 - summary["train_rows_dropped"]
    assert all(p["train_row"] is not None and p["eval_dataset"] == "demo" for p in pairs)
    with pytest.raises(ValueError, match="format 'nope' is not one of"):
        resolve_dataset_plan(DATA, {"demo": REGISTRY["demo"] | {"format": "nope"}})


def test_preflight_fails_fast_on_config_mistakes(tiny_model_dir):
    registry = {"tiny": {"source": "local", "path": str(tiny_model_dir)}}
    tokenize = TOKENIZE
    report = preflight_checks(PLAN, "tiny", registry, tokenize, TRAIN, {}, JUDGE, {})
    assert report["precision"] == "fp32" and report["judges"]["llm"] is None
    with pytest.raises(ValueError, match="Unknown template"):
        preflight_checks(PLAN, "tiny", registry, TOKENIZE | {"template": "nope"}, TRAIN, {}, JUDGE, {})
    with pytest.raises(ValueError, match="loss_on 'prompt' is not one of"):
        preflight_checks(PLAN, "tiny", registry, TOKENIZE | {"loss_on": "prompt"}, TRAIN, {}, JUDGE, {})
    with pytest.raises(ValueError, match="generate.template 'chatml' differs from tokenize.template 'alpaca'"):
        preflight_checks(PLAN, "tiny", registry, TOKENIZE, TRAIN, {"template": "chatml"}, JUDGE, {})
    with pytest.raises(ValueError, match="packing 'tight' is not one of"):
        preflight_checks(PLAN, "tiny", registry, TOKENIZE | {"packing": "tight"}, TRAIN, {}, JUDGE, {})
    with pytest.raises(ValueError, match="train.lerning_rate: unknown key; did you mean learning_rate"):
        preflight_checks(PLAN, "tiny", registry, tokenize, TRAIN | {"lerning_rate": 1e-3}, {}, JUDGE, {})
    with pytest.raises(ValueError, match=r"train.lora.r: Input should be greater than or equal to 1 \(got 0\)"):
        preflight_checks(PLAN, "tiny", registry, tokenize, TRAIN | {"lora": {"r": 0}}, {}, JUDGE, {})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        preflight_checks(PLAN, "bad", {"bad": {"source": "local", "path": "/nonexistent"}}, tokenize, TRAIN, {},
                         JUDGE, {})
    with pytest.raises(ValueError, match="reward_model"):
        preflight_checks(PLAN, "tiny", registry, tokenize, TRAIN, {}, JUDGE | {"reward_model": {"path": "x"}}, {})
    with pytest.raises(FileNotFoundError, match="judge.local.path"):
        preflight_checks(PLAN, "tiny", registry, tokenize, TRAIN, {}, JUDGE | {"local": {"path": "/nonexistent"}}, {})
    with pytest.raises(ValueError, match="sft trains on conversations; data.datasets holds pairs"):
        preflight_checks([{"name": "pairs", "kind": "preference"}], "tiny", registry, tokenize, TRAIN, {}, JUDGE,
                         {})
    url = closed_port_url("/v1")
    with pytest.raises(JudgeEndpointError, match=url):
        preflight_checks(PLAN, "tiny", registry, tokenize, TRAIN, {},
                         JUDGE | {"llm": {"api": "openai", "url": url, "model": "m"}}, {})


def test_prepare_tokenize_and_generate_with_the_adapter_template(tiny_model_dir, tmp_path):
    registry = {"tiny": {"source": "local", "path": str(tiny_model_dir)}}
    folder, info = prepare_base_model("tiny", registry, tmp_path / "cache", {})
    assert info["reused"] is False and prepare_base_model("tiny", registry, tmp_path / "cache", {})[1]["reused"]
    records = [alpaca_record("Say hi", "hi", family="greet", verifiable=True)]
    params = {"template": "tokenizer", "cutoff_len": 64, "loss_on": "assistant", "truncation": "drop",
              "packing": "none"}
    tokens, quarantined, stats = tokenize_split(records, folder, params, {"batch_size": 4}, tmp_path / "token_cache")
    assert stats["rows"] == 1 and not quarantined and stats["reused"] is False
    again = tokenize_split(records, folder, params, {"batch_size": 4}, tmp_path / "token_cache")
    assert again[0] == tokens and again[2]["reused"] is True
    assert tokenize_split(records, folder, params | {"cutoff_len": 63}, {"batch_size": 4}, tmp_path / "token_cache")[0] != tokens
    adapter = tmp_path / "adapter"
    _save_untrained_adapter(folder, adapter, template="tokenizer")
    responses, timing = generate_tuned_responses(records, folder, adapter, {"batch_size": 4, "max_new_tokens": 4,
                                                                           "precision": "fp32"})
    assert responses[0]["template"] == "tokenizer" and responses[0]["output"] == "hi"
    assert responses[0]["batch"] == 0 and timing["batches"][0]["rows"] == 1 and timing["model"] == "tuned"


def _save_untrained_adapter(base, folder, template):
    from peft import get_peft_model

    from llm_finetune.models.loading import load_causal_lm, load_tokenizer
    from llm_finetune.models.tuning import lora_config
    from llm_finetune.tokens.settings import saved_template

    model = get_peft_model(load_causal_lm(base), lora_config({"r": 2, "alpha": 4, "dropout": 0.0,
                                                              "target_modules": "all-linear"}))
    model.save_pretrained(folder)
    load_tokenizer(base).save_pretrained(folder)  # as train_adapter does
    (folder / "prompt_template.json").write_text(json.dumps(saved_template(TOKENIZE | {"template": template},
                                                                           load_tokenizer(base))))


def _responses(answers):
    return [{"instruction": "Add.", "input": "2 + 3", "output": "5", "family": "addition", "verifiable": True,
             "prompt_input": "### Instruction:\nAdd.", "model_response": answer} for answer in answers]


def test_judge_and_report_nodes(tiny_model_dir, tmp_path):
    judge = JUDGE | {"local": {"path": str(tiny_model_dir), "max_new_tokens": 4}}
    base, base_summary = judge_responses(_responses(["The answer is 5.", "6"]), judge, {}, {}, tmp_path)
    tuned, tuned_summary = judge_responses(_responses(["5", "5."]), judge, {}, {}, tmp_path)
    assert [row["exact_match"] for row in base] == [False, False]
    assert tuned_summary["exact_match"] == 1.0 and tuned_summary["exact_match_by_family"] == {"addition": 1.0}
    assert tuned_summary["local_total"] == 2 and all("local_raw" in row for row in tuned)
    summary, table, families, examples, markdown = build_report(base, tuned, base_summary, tuned_summary,
                                                                {"precision": "fp32"}, {"n_examples": 1})
    assert summary["delta"]["exact_match"] == 1.0
    assert list(table["tuned_exact_match"]) == [True, True] and len(table) == 2
    assert families.to_dict("records") == [{"family": "addition", "base_n": 2, "base_exact_match": 0.0,
                                            "tuned_n": 2, "tuned_exact_match": 1.0, "delta": 1.0}]
    assert list(examples["rank"]) == ["worst", "best"] and "base_response" in examples
    assert "| exact_match | 0.0000 | 1.0000 | 1.0000 |" in markdown
    assert flatten_metrics(summary)["tuned.exact_match_by_family.addition"] == 1.0
    history = [{"step": 1, "split": "train", "loss": 2.0}, {"step": 2, "split": "val", "loss": 1.5}]
    loss, histogram = plot_report(base, tuned, history)
    assert loss.axes[0].get_legend_handles_labels()[1] == ["train loss", "val loss"]
    assert len(histogram.axes) == 1 and histogram.axes[0].get_title() == "local judge"
