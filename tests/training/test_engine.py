import json

import pytest
import torch

from llm_finetune.tokens.conversations import IGNORE_INDEX, TokenizeSettings, tokenize_records
from llm_finetune.tokens.packing import PadCollator
from llm_finetune.tokens.templates import load_template
from tests.conftest import DEMO_DATA, alpaca_record
from tests.conftest import train_lm as train_model

PARAMS = {"seed": 7, "precision": "fp32", "epochs": 1, "max_steps": 30, "batch_size": 4,
          "gradient_accumulation_steps": 1, "learning_rate": 5e-3, "weight_decay": 0.0, "lr_scheduler": "constant",
          "warmup_steps": 0, "max_grad_norm": 1.0, "group_by_length": True, "eval_steps": 10, "logging_steps": 5,
          "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}}


def test_collator_pads_labels_by_position_so_eos_stays_a_target():
    eos = pad = 2
    rows = [{"input_ids": [5, 6, eos], "labels": [IGNORE_INDEX, 6, eos]}, {"input_ids": [5], "labels": [5]}]
    batch = PadCollator(pad_token_id=pad)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, eos], [5, pad, pad]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, eos], [5, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.fixture(scope="module")
def token_rows(tiny_tokenizer):
    rows = json.loads(DEMO_DATA.read_text())[:48]
    records = [alpaca_record(r["instruction"], r["output"], r["input"]) for r in rows]
    tokens, _ = tokenize_records(records, TokenizeSettings(load_template("alpaca"), 128), tiny_tokenizer)
    return tokens[:40], tokens[40:]


def test_lora_training_lowers_the_loss_and_is_reproducible(tiny_model_dir, token_rows):
    train, val = token_rows
    model, tokenizer, history, info = train_model(train, val, tiny_model_dir, PARAMS)
    train_losses = [row["loss"] for row in history if row["split"] == "train"]
    val_losses = [row["loss"] for row in history if row["split"] == "val"]
    assert len(train_losses) == 6 and len(val_losses) == 3
    assert train_losses[-1] < train_losses[0]
    assert info["precision"] == "fp32" and info["global_steps"] == 30
    assert 0 < info["trainable_parameters"] < info["total_parameters"]
    _, _, again, _ = train_model(train, val, tiny_model_dir, PARAMS)
    assert again == history
    lora_weights = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_weights and any(torch.count_nonzero(p) for p in lora_weights)


def test_bf16_lora_training_uses_its_fast_path_and_leaves_a_usable_model(tiny_model_dir, token_rows):
    train, val = token_rows
    params = PARAMS | {"precision": "bf16", "max_steps": 10, "eval_steps": 5}
    model, _, history, info = train_model(train, val, tiny_model_dir, params)
    assert info["precision"] == "bf16" and info["attention"] == "sdpa_fp32"
    train_losses = [row["loss"] for row in history if row["split"] == "train"]
    assert train_losses[-1] < train_losses[0]
    assert model.get_base_model().config._attn_implementation == "sdpa"  # switched back after training
    assert all(layer.cast_input_dtype_enabled for name, layer in model.named_modules() if name.endswith("q_proj"))
    batch = PadCollator(pad_token_id=0)(val[:2])
    with torch.no_grad():  # no autocast: the restored input casts keep bf16 base + fp32 LoRA working
        assert torch.isfinite(model(**batch).loss)
    _, _, again, _ = train_model(train, val, tiny_model_dir, params)
    assert again == history
