"""The model card: written from the run's records, copied into exports of the same adapter only."""

from __future__ import annotations

import json

from llm_finetune.serving.model_card import base_licence, card_for_export, model_card

PLAN = [{"name": "book", "source": {"path": "data.json"}, "format": "alpaca", "kind": "conversation"}]
ALIGN = {"datasets": {"book": {"rows_in": 12, "rows_kept": 10, "rows_quarantined": 2}}}
INFO = {"method": "lora", "train_rows": 8, "val_rows": 2, "global_steps": 4, "final_train_loss": 1.5,
        "final_val_loss": 1.7, "precision": "fp32"}
SUMMARY = {"base": {"exact_match": 0.1, "rouge_l": 0.2, "n": 9}, "tuned": {"exact_match": 0.5, "rouge_l": 0.4, "n": 9},
           "delta": {"exact_match": 0.4, "rouge_l": 0.2}}
BASE = {"name": "smollm2", "source": "gguf_package", "fingerprint": "abc123", "location": "x.gguf"}


def _adapter(tmp_path, version="2026-01-01T00.00.00.000Z"):
    folder = tmp_path / "adapter" / version / "adapter"
    folder.mkdir(parents=True)
    (folder / "prompt_template.json").write_text(json.dumps({"template": "alpaca", "source": "user: '{content}'"}))
    (folder / "training_params.json").write_text(json.dumps({"learning_rate": 0.0002, "lora": {"r": 16}}))
    return folder


def test_the_card_holds_base_data_template_settings_metrics_and_judges(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.json").write_text("[]")
    card = model_card(_adapter(tmp_path), BASE, PLAN, ALIGN, INFO, SUMMARY, {"reference": {"max_reference_words": 4}},
                      "apache-2.0", "sft")
    assert card.startswith("---\nlicense: apache-2.0\nbase_model: smollm2\n")
    assert "<!-- adapter: 2026-01-01T00.00.00.000Z -->" in card and "fingerprint: `abc123`" in card
    assert "| book | `data.json` | `4f53cda18c2baa0c` | 12 | 10 | 2 |" in card  # sha256 of "[]"
    assert "Trained on 8 rows, validated on 2 (4 optimizer steps)." in card
    assert "user: '{content}'" in card and '| lora | `{"r": 16}` |' in card and "| learning_rate | `0.0002` |" in card
    assert "| exact_match | 0.1 | 0.5 | 0.4 |" in card and "On 9 held-out test rows." in card
    assert '"max_reference_words": 4' in card


def test_an_unevaluated_run_and_an_unknown_licence_say_so(tmp_path):
    card = model_card(_adapter(tmp_path), BASE, [], {}, INFO, None, {}, base_licence(BASE, {}, tmp_path), "dpo")
    assert "(no base -> tuned evaluation recorded for this run)" in card
    assert card.startswith("---\nlicense: unknown\n") and "check the base model's own card" in card
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# base\n")
    assert base_licence(BASE, {}, tmp_path) == "mit" and base_licence(BASE, {"license": "gemma"}, tmp_path) == "gemma"


def test_an_export_reuses_the_card_of_its_own_adapter_only(tmp_path):
    adapter = _adapter(tmp_path)
    card = model_card(adapter, BASE, [], {}, INFO, SUMMARY, {}, "apache-2.0", "sft")
    exported = card_for_export(card, adapter, ["- merged, float32"])
    assert exported.startswith(card.rstrip("\n")) and exported.endswith("## Export\n\n- merged, float32\n")
    other = _adapter(tmp_path, "2026-02-02T00.00.00.000Z")
    stale = card_for_export(card, other, ["- merged"])
    assert "describes adapter 2026-01-01T00.00.00.000Z, not this one" in stale and "## Data" not in stale
    assert "<!-- adapter: 2026-02-02T00.00.00.000Z -->" in card_for_export(None, other, [])
