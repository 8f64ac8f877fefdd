"""The precision of a run: which one the hardware likes, and the context every model pass runs in.

``precision: auto`` picks bf16 where the device runs it natively (CUDA with bf16 support, or a
CPU with AMX / AVX-512 BF16), fp16 with loss scaling on an older GPU (the Trainer's ``fp16``:
fp32 master weights, a dynamic loss scale) and fp32 elsewhere; the choice is returned so runs can record it.
How much bf16 gains varies by CPU: from ~1.4x (AVX-512 BF16 only) to ~6x (AMX) for a GEMM on the
machines of this project.

With LoRA in bf16 the frozen base weights are bf16 and the LoRA weights fp32, under bf16
autocast. peft casts each LoRA input to the fp32 adapter dtype and autocast casts it straight
back to bf16 for the matmul: two copies per adapted layer and step for the same numbers, so
:func:`compute_context` turns peft's casts off. It also disables the adapter for reference
passes (DPO's reference is the start model: the policy with its LoRA off). Training, reference
log-probs, evaluation and reward scoring all run in it.
"""

from __future__ import annotations

import functools
from contextlib import ExitStack
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when /proc/cpuinfo reports AMX-BF16 or AVX-512 BF16."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(requested: str) -> str:
    """Map ``auto | fp32 | bf16`` to the precision actually used."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "fp16" and not torch.cuda.is_available():
        raise ValueError("precision fp16 (with loss scaling) is for GPUs without bf16; on a CPU use bf16 or fp32")
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def compute_context(model, precision: str, autocast: bool = True, reference: bool = False) -> ExitStack:
    """The numerics of a pass: bf16 autocast (``autocast=False`` where the Trainer autocasts itself) with
    peft's fp32 input casts off; ``reference``: the adapter disabled (the start model)."""
    from peft.helpers import disable_input_dtype_casting

    stack = ExitStack()
    is_peft = hasattr(model, "peft_config")
    if reference and is_peft:
        stack.enter_context(model.disable_adapter())
    if precision in ("bf16", "fp16"):
        if autocast:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            stack.enter_context(torch.autocast(next(model.parameters()).device.type, dtype=dtype))
        if is_peft:
            stack.enter_context(disable_input_dtype_casting(model))
    return stack
