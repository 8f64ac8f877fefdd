"""Converts the packaged SmolLM2 GGUF (the project's default model): ~45 s, ~1.5 GB RAM."""

import math

import pytest
import torch

from llm_finetune.models.loading import load_causal_lm, load_tokenizer


@pytest.mark.slow
def test_packaged_gguf_becomes_a_coherent_transformers_model(smollm2_dir):
    folder = smollm2_dir
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in folder.iterdir()}
    model, tokenizer = load_causal_lm(folder), load_tokenizer(folder)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    text = "The capital of France is Paris. It is known for the Eiffel Tower and its museums."
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.inference_mode():
        loss = model(input_ids=ids, labels=ids).loss
    assert math.exp(loss.item()) < 60, "dequantised weights should give fluent-text perplexity"
