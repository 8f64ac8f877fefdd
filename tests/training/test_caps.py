"""Caps never hide themselves: preflight names every cap in effect, the node that applies one says
"N of M" (in its stats, hence MLflow), and ``max_train_rows`` counts samples before packing, not bins."""

from __future__ import annotations

import logging

from llm_finetune.models.materialize import prepare_base_model
from llm_finetune.pipelines.stages.nodes import stage_preflight
from llm_finetune.pipelines.tokenize.nodes import tokenize_split, tokenize_train_split
from llm_finetune.tokens.store import load_rows
from llm_finetune.training.settings import caps_in_effect, train_settings
from tests.conftest import alpaca_record

TOKENIZE = {"template": "alpaca", "cutoff_len": 128, "loss_on": "assistant", "truncation": "truncate_response",
            "packing": "bfd"}
RECORDS = [alpaca_record(f"Repeat the word {'owl ' * (i % 5 + 1)}", "owl " * (i % 7 + 1), row=i) for i in range(24)]


def test_a_cap_that_cuts_says_how_many_of_how_many(caplog):
    settings = train_settings({"max_train_rows": 5}, "rm.train")
    with caplog.at_level(logging.WARNING, logger="llm_finetune.training.settings"):
        kept, record = settings.capped(list(range(12)), "rm.train", "pairs")
    assert kept == [0, 1, 2, 3, 4] and record == {"max_train_rows": 5, "rows_available": 12, "rows_used": 5}
    assert "rm.train.max_train_rows = 5: training on 5 of 12 pairs" in caplog.text
    assert train_settings({}, "rm.train").capped([1, 2], "rm.train")[1]["rows_used"] == 2


def test_preflight_names_every_cap_in_effect(tiny_model_dir, caplog):
    plan = [{"name": "demo_preferences", "kind": "preference", "max_rows": 300}]
    registry = {"tiny": {"source": "local", "path": str(tiny_model_dir)}}
    with caplog.at_level(logging.WARNING, logger="llm_finetune.training.settings"):
        report = stage_preflight("rm", plan, "tiny", registry, TOKENIZE, {"train": {"max_train_rows": 160}})
    assert report["caps"] == {"data.demo_preferences.max_rows": 300, "rm.train.max_train_rows": 160,
                              "tokenize.cutoff_len": 128}
    assert "rm.train.max_train_rows=160" in caplog.text
    assert caps_in_effect(train_settings({}, "train"), "train", [{"name": "d", "max_rows": None}], {}) == {}



def test_preference_stages_refuse_a_method_they_would_not_train(tiny_model_dir):
    """rm / dpo / kto always train a LoRA: full / freeze / qlora there would be ignored, so preflight says so."""
    import pytest

    plan = [{"name": "demo_preferences", "kind": "preference", "max_rows": None}]
    registry = {"tiny": {"source": "local", "path": str(tiny_model_dir)}}
    with pytest.raises(ValueError, match="dpo.train.method 'full': dpo trains a LoRA"):
        stage_preflight("dpo", plan, "tiny", registry, TOKENIZE, {"train": {"method": "full"}, "loss_type": "sigmoid",
                                                                  "beta": 0.1})


def test_max_train_rows_keeps_the_first_samples_before_packing(tiny_model_dir, tmp_path):
    """Before, the cap sliced packed bins in the engine: under bfd the longest-first bins, so 5 'rows'
    were 5 bins of several samples each, and the samples kept were not the first ones."""
    folder, _ = prepare_base_model("tiny", {"tiny": {"source": "local", "path": str(tiny_model_dir)}},
                                   tmp_path / "cache")
    train = {"batch_size": 2, "max_train_rows": 5}
    tokens, _, stats = tokenize_train_split(RECORDS, folder, TOKENIZE, train, tmp_path / "tokens")
    rows = load_rows(tokens).to_list()
    assert stats | {"rows_available": 24, "rows_used": 5, "max_train_rows": 5} == stats and stats["rows"] == 5
    assert sorted(n for row in rows for n in row["sample_lengths"]) == sorted(
        len(r["input_ids"]) for r in load_rows(tokenize_split(RECORDS[:5], folder, TOKENIZE | {"packing": "none"},
                                                               train, tmp_path / "tokens")[0]).to_list())
    val_tokens, _, val_stats = tokenize_split(RECORDS, folder, TOKENIZE, train, tmp_path / "tokens")
    assert val_stats["rows"] == 24 and "rows_used" not in val_stats  # held-out splits are never capped
    uncapped = tokenize_train_split(RECORDS, folder, TOKENIZE, {"batch_size": 2}, tmp_path / "tokens")
    assert uncapped[0] != tokens and uncapped[2]["rows_used"] == 24  # the cap is part of the cache key
