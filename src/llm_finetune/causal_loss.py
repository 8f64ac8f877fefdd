"""Causal-LM loss with logits only where a label is trained.

A transformers ``*ForCausalLM`` projects every position onto the vocabulary (49,152 x 576
multiply-adds per token for SmolLM2) and the loss then ignores the prompt and padding
positions. Here the decoder's last hidden states are gathered at the trained positions first,
so the LM head, the fp32 log-softmax and their backward run on those alone: a quarter of the
tokens on the book's data (answers are short next to their prompts), about 1.4x faster LoRA
steps on CPU. The loss is the same sum of token cross-entropies, divided by the trained tokens
of the whole accumulated batch when the Trainer passes ``num_items_in_batch``;
``tests/test_causal_loss.py`` pins the equality with the model's own loss.

Only architectures whose logits are plainly ``lm_head(hidden)`` (optionally soft-capped, as in
Gemma) take this path; any other model computes its own loss (:func:`supports_trained_token_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llm_finetune.tokenization import IGNORE_INDEX

# model_type values whose CausalLM forward is decoder -> lm_head(hidden) [-> final soft-cap], with no extra
# loss terms (mixture-of-experts models add a router loss, so they are not listed)
PLAIN_HEAD_MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "smollm3", "olmo2", "starcoder2",
})


def causal_lm(model):
    """The transformers CausalLM under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_trained_token_loss(model) -> bool:
    """Whether ``model``'s logits are ``lm_head(decoder(...))`` so the gathered loss equals its own."""
    causal = causal_lm(model)
    config = causal.config
    return (config.model_type in PLAIN_HEAD_MODEL_TYPES and not config.is_encoder_decoder
            and getattr(causal, "model", None) is not None and causal.get_output_embeddings() is not None)


def trained_token_loss(model, inputs: dict, num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Sum of next-token cross-entropies at the trained positions of ``inputs``.

    Divided by ``num_items_in_batch`` (the trained tokens of all accumulated micro-batches) when
    given, else by this batch's trained tokens (a mean, as for evaluation).
    """
    causal = causal_lm(model)
    forward = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    hidden = causal.model(**forward, use_cache=False).last_hidden_state
    targets = inputs["labels"][:, 1:]
    trained = targets != IGNORE_INDEX
    logits = causal.get_output_embeddings()(hidden[:, :-1][trained]).float()
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    total = F.cross_entropy(logits, targets[trained], reduction="sum")
    divisor = num_items_in_batch if num_items_in_batch is not None else trained.sum().clamp(min=1)
    return total / divisor
