"""Attention implementation for training: fp32 attention inside bf16 training on CPU.

On this CPU torch's flash-attention kernel is fast in fp32 but its bf16 backward is about 3.4x
slower than the fp32 one (profiled on SmolLM2-135M, LoRA, the book's rows: 0.90 s against
0.27 s per 3 steps), enough to cost a fifth of a bf16 training step. ``sdpa_fp32`` runs
transformers' own SDPA attention (its masks, GQA and causal handling unchanged) on q, k, v
upcast to fp32 with autocast off, and hands the output back in the compute dtype: faster, and
no less precise than bf16 attention. GEMMs elsewhere stay in bf16.

``train.attention``: ``auto`` picks ``sdpa_fp32`` for bf16 training on CPU when the model
uses SDPA, and leaves the model's implementation alone otherwise; any other value (``sdpa``,
``eager``, ``sdpa_fp32``) is set as is.
"""

from __future__ import annotations

import torch

from llm_finetune.training.numerics import causal_lm

SDPA_FP32 = "sdpa_fp32"


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


def training_attention(requested: str, current: str, precision: str, device_type: str) -> str:
    """The attention implementation to train with (see the module docstring)."""
    if requested != "auto":
        return requested
    return SDPA_FP32 if precision == "bf16" and device_type == "cpu" and current == "sdpa" else current


def use_training_attention(model, requested: str, precision: str) -> tuple[str, str]:
    """Switch ``model`` to its training attention; returns ``(chosen, previous)`` to switch back after."""
    causal = causal_lm(model)
    previous = causal.config._attn_implementation
    chosen = training_attention(requested, previous, precision, causal.device.type)
    if chosen == SDPA_FP32:
        register_sdpa_fp32()
    if chosen != previous:
        set_attention(causal, chosen)
    return chosen, previous


def set_attention(model, implementation: str) -> None:
    """Switch ``model`` (or the CausalLM under its peft wrapper) to ``implementation``."""
    causal_lm(model).set_attn_implementation(implementation)
