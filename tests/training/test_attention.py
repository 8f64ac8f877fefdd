"""Training attention: ``auto`` picks fp32 SDPA for bf16 CPU training, with the same results as SDPA."""

import torch
from transformers import LlamaForCausalLM

from llm_finetune.tokens.packing import PadCollator, pack_rows
from llm_finetune.training.attention import (
    COMPILED_MATMUL_ATTENTION_MAX_TOKENS,
    SDPA_FP32,
    attention_key,
    training_attention,
    use_training_attention,
)
from tests.training.test_numerics import rows


def test_auto_picks_fp32_attention_only_for_bf16_sdpa_on_cpu():
    assert training_attention("auto", "sdpa", "bf16", "cpu") == SDPA_FP32
    assert training_attention("auto", "sdpa", "fp32", "cpu") == "sdpa"
    assert training_attention("auto", "sdpa", "bf16", "cuda") == "sdpa"
    assert training_attention("auto", "eager", "bf16", "cpu") == "eager"
    assert training_attention("eager", "sdpa", "bf16", "cpu") == "eager"


def test_auto_picks_matmul_attention_for_compiled_layers_on_short_rows_only():
    short, long = COMPILED_MATMUL_ATTENTION_MAX_TOKENS, COMPILED_MATMUL_ATTENTION_MAX_TOKENS + 1
    assert training_attention("auto", "sdpa", "bf16", "cpu", compiled=True, longest=short) == "eager"
    assert training_attention("auto", "sdpa", "bf16", "cpu", compiled=True, longest=long) == SDPA_FP32
    assert training_attention("auto", "sdpa", "bf16", "cpu", compiled=True, longest=None) == SDPA_FP32
    assert training_attention("auto", "sdpa", "bf16", "cpu", compiled=False, longest=short) == SDPA_FP32
    assert training_attention("auto", "sdpa", "bf16", "cuda", compiled=True, longest=short) == "sdpa"
    assert training_attention("auto", "sdpa", "fp32", "cpu", compiled=True, longest=short) == "sdpa"
    assert training_attention("sdpa_fp32", "sdpa", "bf16", "cpu", compiled=True, longest=short) == SDPA_FP32
    # caches of reference log-probs tell the two apart; keys of uncompiled runs are as before
    assert attention_key("auto", False) == "auto" != attention_key("auto", True)


def test_fp32_attention_matches_sdpa_for_padded_and_packed_batches(tiny_model_dir):
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert model.config._attn_implementation == "sdpa"
    data = rows(model.config.vocab_size)
    batches = [PadCollator(pad_token_id=0)(data), PadCollator(pad_token_id=0)(pack_rows(data, "greedy", 24))]
    expected = [model(**batch).loss for batch in batches]
    chosen, previous = use_training_attention(model, "sdpa_fp32", "bf16")
    assert (chosen, previous) == (SDPA_FP32, "sdpa") and model.config._attn_implementation == SDPA_FP32
    for batch, loss in zip(batches, expected):
        torch.testing.assert_close(model(**batch).loss, loss)


def test_fp32_attention_runs_in_fp32_under_bf16_autocast(tiny_model_dir, monkeypatch):
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    seen = []
    hook = torch.nn.functional.scaled_dot_product_attention

    def spy(query, *args, **kwargs):
        seen.append(query.dtype)
        return hook(query, *args, **kwargs)

    use_training_attention(model, "auto", "bf16")
    batch = PadCollator(pad_token_id=0, attention_mask=False)(rows(model.config.vocab_size))
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert seen and set(seen) == {torch.float32}
    assert out.logits.dtype == torch.bfloat16
