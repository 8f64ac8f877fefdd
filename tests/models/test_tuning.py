"""LoRA / DoRA, full and freeze fine-tuning train exactly the chosen weights; early stopping; MFU."""

import json

import pytest
import torch

from llm_finetune.models.loading import load_causal_lm
from llm_finetune.models.tuning import prepare_model
from llm_finetune.tokens.conversations import TokenizeSettings, tokenize_records
from llm_finetune.tokens.templates import load_template
from llm_finetune.training.callbacks import peak_gemm_flops
from tests.conftest import DEMO_DATA, alpaca_record
from tests.conftest import train_lm as train_model

PARAMS = {"seed": 5, "precision": "fp32", "epochs": 1, "max_steps": 6, "batch_size": 4,
          "gradient_accumulation_steps": 1, "learning_rate": 5e-3, "weight_decay": 0.0, "lr_scheduler": "constant",
          "warmup_steps": 0, "max_grad_norm": 1.0, "group_by_length": True, "eval_steps": 2, "logging_steps": 2,
          "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
          "freeze": {"trainable_layers": 1, "trainable_modules": ["mlp"], "extra_modules": []}}


def prepare(model_dir, params: dict):
    return prepare_model(model_dir, params["method"], params["lora"], params["freeze"], "fp32")


@pytest.fixture(scope="module")
def rows(tiny_tokenizer):
    demo = json.loads(DEMO_DATA.read_text())[:40]
    records = [alpaca_record(r["instruction"], r["output"], r["input"]) for r in demo]
    tokens, _ = tokenize_records(records, TokenizeSettings(load_template("alpaca"), 128), tiny_tokenizer)
    assert len(tokens) >= 28
    return tokens[:24], tokens[-4:]


def test_freeze_trains_only_the_chosen_modules_of_the_last_layers(tiny_model_dir):
    model, trainable, total = prepare(tiny_model_dir, PARAMS | {"method": "freeze"})
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("model.layers.1.mlp.") for n in names)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in names) < total
    whole_layer = prepare(tiny_model_dir, PARAMS | {"method": "freeze", "freeze": {"trainable_layers": 2}})[1]
    assert whole_layer > trainable
    with pytest.raises(ValueError, match="trainable_layers must be 1..2"):
        prepare(tiny_model_dir, PARAMS | {"method": "freeze", "freeze": {"trainable_layers": 3}})
    with pytest.raises(ValueError, match="method 'ia3'"):
        prepare(tiny_model_dir, PARAMS | {"method": "ia3"})


@pytest.mark.parametrize("method", ["full", "freeze"])
def test_full_and_freeze_change_exactly_their_weights(tiny_model_dir, rows, method, tmp_path):
    model, _, history, info = train_model(*rows, tiny_model_dir, PARAMS | {"method": method})
    base = dict(load_causal_lm(tiny_model_dir).named_parameters())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), base[n].detach())}
    if method == "full":
        assert len(changed) == len(base)
    else:
        assert changed and all(n.startswith("model.layers.1.mlp.") for n in changed)
    assert info["method"] == method and info["global_steps"] == 6
    model.save_pretrained(tmp_path)  # what the adapter folder holds for full / freeze
    reloaded = load_causal_lm(tiny_model_dir, adapter=tmp_path)
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)


def test_dora_neftune_and_early_stopping(tiny_model_dir, rows):
    params = PARAMS | {"lora": PARAMS["lora"] | {"use_dora": True}, "neftune_noise_alpha": 5.0,
                       "learning_rate": 0.0, "max_steps": 12, "early_stopping": {"patience": 2, "min_delta": 0.0}}
    model, _, history, info = train_model(*rows, tiny_model_dir, params)
    assert any("lora_magnitude_vector" in n for n, _ in model.named_parameters())
    assert info["stopped_early"] and info["global_steps"] == 6  # val loss flat (lr 0): stop after 3 evals
    assert info["input_tokens_per_s"] > 0 and info["peak_gemm_tflops"] > 0 and 0 < info["mean_mfu"] < 1


def test_peak_gemm_flops_is_measured_per_dtype():
    assert peak_gemm_flops(torch.float32, size=256, seconds=0.1) > 1e8
