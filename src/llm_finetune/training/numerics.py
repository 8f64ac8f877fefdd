"""The numerics every objective shares: precision contexts and log-probs at the trained positions only.

**Trained positions only.** A transformers ``*ForCausalLM`` projects every position onto the
vocabulary (49,152 x 576 multiply-adds per token for SmolLM2) and the loss then ignores the
prompt and padding positions. Here the decoder's last hidden states are gathered at the trained
positions first, so the LM head, the fp32 log-softmax and their backward run on those alone: a
quarter of the tokens on the book's data, about 1.4x faster LoRA steps on CPU. The SFT / pt
loss (:func:`trained_token_loss`), DPO's sequence log-probs and held-out perplexity
(:func:`sequence_logps`) all go through :func:`trained_logits`; ``tests/training/test_numerics.py``
pins the equality with the model's own loss. Only architectures whose logits are plainly
``lm_head(hidden)`` (optionally soft-capped, as in Gemma) take this path; any other model
computes its logits itself (:func:`supports_trained_token_loss`). With a frozen head the training
loss does not materialise the logits of all trained positions at once either: it runs a chunk at a
time with its gradient taken on the way (:mod:`llm_finetune.training.head_loss`).

The precision of every pass (bf16 autocast with peft's input casts off) is
:func:`llm_finetune.models.precision.compute_context`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llm_finetune.models.precision import compute_context
from llm_finetune.tokens.conversations import IGNORE_INDEX
from llm_finetune.tokens.packing import in_length_order
from llm_finetune.training.head_loss import fusable_head_weight, head_cross_entropy

# model_type values whose CausalLM forward is decoder -> lm_head(hidden) [-> final soft-cap], with no extra
# loss terms (mixture-of-experts models add a router loss, so they are not listed)
PLAIN_HEAD_MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "smollm3", "olmo2", "starcoder2",
})
FORWARD_KEYS = ("input_ids", "attention_mask", "position_ids")


def causal_lm(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_trained_token_loss(model) -> bool:
    """Whether ``model``'s logits are ``lm_head(decoder(...))`` so the gathered loss equals its own."""
    causal = causal_lm(model)
    config = causal.config
    return (config.model_type in PLAIN_HEAD_MODEL_TYPES and not config.is_encoder_decoder
            and getattr(causal, "model", None) is not None and causal.get_output_embeddings() is not None)


def decoder_hidden(model, inputs: dict) -> torch.Tensor:
    """The decoder's last hidden states for ``inputs`` (a model that :func:`supports_trained_token_loss`)."""
    forward = {k: v for k, v in inputs.items() if k in FORWARD_KEYS}
    return causal_lm(model).model(**forward, use_cache=False).last_hidden_state


def trained_logits(model, inputs: dict, trained: torch.Tensor) -> torch.Tensor:
    """fp32 logits predicting each trained target (``trained``: a mask over ``labels[:, 1:]``)."""
    if not supports_trained_token_loss(model):
        forward = {k: v for k, v in inputs.items() if k in FORWARD_KEYS}
        return model(**forward, use_cache=False).logits[:, :-1][trained].float()
    causal = causal_lm(model)
    logits = causal.get_output_embeddings()(decoder_hidden(model, inputs)[:, :-1][trained]).float()
    cap = getattr(causal.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def fused_head(model) -> torch.Tensor | None:
    """The LM head weight when the loss can run through :func:`head_cross_entropy` (a frozen plain head, no
    soft-cap), else None."""
    if not supports_trained_token_loss(model) or getattr(causal_lm(model).config, "final_logit_softcapping", None):
        return None
    return fusable_head_weight(causal_lm(model).get_output_embeddings())


def trained_token_loss(model, inputs: dict, num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Sum of next-token cross-entropies at the trained positions of ``inputs``.

    Divided by ``num_items_in_batch`` (the trained tokens of all accumulated micro-batches) when
    given, else by this batch's trained tokens (a mean, as for evaluation). A frozen head goes
    through :func:`llm_finetune.training.head_loss.head_cross_entropy` (chunked, the same numbers).
    """
    targets = inputs["labels"][:, 1:]
    trained = targets != IGNORE_INDEX
    divisor = num_items_in_batch if num_items_in_batch is not None else trained.sum().clamp(min=1)
    head = fused_head(model)
    if head is not None:
        return head_cross_entropy(decoder_hidden(model, inputs)[:, :-1][trained], head, targets[trained], divisor)
    total = F.cross_entropy(trained_logits(model, inputs, trained), targets[trained], reduction="sum")
    return total / divisor


def sequence_logps(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log-prob sums, labelled token counts)`` per row: ``log p(label_t | < t)`` over the labelled positions."""
    targets = inputs["labels"][:, 1:]
    trained = targets != IGNORE_INDEX
    token_logps = -F.cross_entropy(trained_logits(model, inputs, trained), targets[trained], reduction="none")
    rows = trained.nonzero()[:, 0]
    sums = torch.zeros(len(targets), dtype=token_logps.dtype, device=token_logps.device)
    return sums.index_add(0, rows, token_logps), trained.sum(dim=1)


@torch.no_grad()
def scored_in_length_order(model, items: list, lengths: list[int], batch_size: int, precision: str, score,
                           reference: bool = False) -> list:
    """``score(batch_items)`` over ``items`` batched by length (:func:`in_length_order`), one result per item in
    their order: the model in eval mode under the precision context (``reference``: a peft model with its
    adapter disabled, the model it started from), its train / eval mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with compute_context(model, precision, reference=reference):
            return in_length_order(items, lengths, batch_size, score)
    finally:
        model.train(was_training)
