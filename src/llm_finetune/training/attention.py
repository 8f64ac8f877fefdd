"""Attention implementation for training: fp32 attention inside bf16 training on CPU.

On this CPU torch's flash-attention kernel is fast in fp32 but its bf16 backward is about 3.4x
slower than the fp32 one (profiled on SmolLM2-135M, LoRA, the book's rows: 0.90 s against
0.27 s per 3 steps), enough to cost a fifth of a bf16 training step. ``sdpa_fp32`` runs
transformers' own SDPA attention (its masks, GQA and causal handling unchanged) on q, k, v
upcast to fp32 with autocast off, and hands the output back in the compute dtype: faster, and
no less precise than bf16 attention. GEMMs elsewhere stay in bf16.

**Compiled layers and short rows: matmul attention.** Under ``train.compile`` the decoder layers go
through inductor, which fuses transformers' ``eager`` attention (two bf16 batched matmuls around an
fp32 softmax) with the rest of the layer, while the flash kernel stays an opaque call with its
fixed per-call cost. On rows of up to :data:`COMPILED_MATMUL_ATTENTION_MAX_TOKENS` tokens that is
1.1-1.2x faster a forward + backward (``benchmarks/engine_step_ab.py``'s ``compiled_attention``;
the book's rows, 47-65 tokens a batch: 1.20x); from about 192 tokens the flash kernel wins (0.91x at
192, 0.64x at 1,024 tokens), and the matmul form holds a rows x heads x tokens^2 score matrix per
layer, so longer rows keep ``sdpa_fp32``. Without compilation the two are within 7 %, so eager
layers keep ``sdpa_fp32`` at every length.

``train.attention``: ``auto`` picks, for bf16 training on CPU when the model uses SDPA, ``eager``
under compiled layers when no row is longer than that bound, else ``sdpa_fp32``; it leaves the
model's implementation alone otherwise. Any other value (``sdpa``, ``eager``, ``sdpa_fp32``) is set
as is.
"""

from __future__ import annotations

import torch

from llm_finetune.training.numerics import causal_lm

SDPA_FP32 = "sdpa_fp32"
COMPILED_MATMUL_ATTENTION_MAX_TOKENS = 128  # measured crossover under compiled layers (module docstring)


def _sdpa_fp32(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        output, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                                 **kwargs)
    return output.to(query.dtype), weights


def register_sdpa_fp32() -> None:
    """Make ``sdpa_fp32`` known to transformers (attention function and its mask builder)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SDPA_FP32, _sdpa_fp32)
    AttentionMaskInterface.register(SDPA_FP32, sdpa_mask)


def training_attention(requested: str, current: str, precision: str, device_type: str, compiled: bool = False,
                       longest: int | None = None) -> str:
    """The attention implementation to train with (see the module docstring).

    ``compiled``: the decoder layers run compiled (``train.compile``); ``longest``: the tokens of the longest
    row the model will see (``None``: unknown, taken as long).
    """
    if requested != "auto":
        return requested
    if not (precision == "bf16" and device_type == "cpu" and current == "sdpa"):
        return current
    if compiled and longest is not None and longest <= COMPILED_MATMUL_ATTENTION_MAX_TOKENS:
        return "eager"
    return SDPA_FP32


def attention_key(requested: str, compiled: bool) -> str:
    """What ``auto``'s choice depends on besides the rows, for caches of numbers computed with it (the DPO / KTO
    reference log-probs): the request, and whether the layers are compiled."""
    return f"{requested}+compile" if compiled else requested


def use_training_attention(model, requested: str, precision: str, compiled: bool = False,
                           longest: int | None = None) -> tuple[str, str]:
    """Switch ``model`` to its training attention; returns ``(chosen, previous)`` to switch back after."""
    causal = causal_lm(model)
    previous = causal.config._attn_implementation
    chosen = training_attention(requested, previous, precision, causal.device.type, compiled, longest)
    if chosen == SDPA_FP32:
        register_sdpa_fp32()
    if chosen != previous:
        set_attention(causal, chosen)
    return chosen, previous


def set_attention(model, implementation: str) -> None:
    """Switch ``model`` (or the CausalLM under its peft wrapper) to ``implementation``."""
    causal_lm(model).set_attn_implementation(implementation)
