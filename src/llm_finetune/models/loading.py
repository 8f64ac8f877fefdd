"""Load models and tokenizers from catalog folders, in the precision the hardware likes.

``precision: auto`` picks bf16 where the device runs it natively (CUDA with bf16 support,
or a CPU with AMX / AVX-512 BF16) and fp32 elsewhere; the choice is returned so runs can
record it. How much bf16 gains varies by CPU: from ~1.4x (AVX-512 BF16 only) to ~6x (AMX)
for a GEMM on the machines of this project.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16")


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
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(folder: Path, padding_side: str = "right"):
    """The folder's tokenizer, with a pad token (EOS when the model has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(folder: Path, dtype: torch.dtype = torch.float32, adapter: Path | None = None):
    """Base model from ``folder``; with ``adapter``, the peft adapter merged into it.

    An ``adapter`` folder without ``adapter_config.json`` holds a whole tuned model (full or
    freeze fine-tuning) and is loaded instead of the base.
    """
    from transformers import AutoModelForCausalLM

    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(adapter, dtype=dtype).to(device())
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.to(device())
