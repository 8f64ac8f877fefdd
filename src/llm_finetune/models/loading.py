"""Load models and tokenizers from catalog folders (the precision is chosen in :mod:`.precision`)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def device() -> torch.device:
    """Where a model loads: the CPU, or this process's GPU (``LOCAL_RANK`` under torchrun / accelerate
    launch, so N ranks do not all load onto ``cuda:0`` first)."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def trusts_remote_code(folder: Path) -> bool:
    """Whether the model in ``folder`` was materialised from a registry entry with ``trust_remote_code: true``
    (its ``source.json``, or the ``base_model.json`` a trained model carries): the only way its Python
    files may run when it is loaded again."""
    for name in ("source.json", "base_model.json"):
        path = Path(folder) / name
        if path.is_file():
            return bool(json.loads(path.read_text()).get("trust_remote_code", False))
    return False


def load_tokenizer(folder: Path, padding_side: str = "right"):
    """The folder's tokenizer, with a pad token (EOS when the model has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trusts_remote_code(folder))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(folder: Path, dtype: torch.dtype = torch.float32, adapter: Path | None = None,
                   quantization_config=None):
    """Base model from ``folder``; with ``adapter``, the peft adapter merged into it.

    An ``adapter`` folder without ``adapter_config.json`` holds a whole tuned model (full or
    freeze fine-tuning) and is loaded instead of the base. ``quantization_config``: a 4-bit base
    (``method: qlora``), placed by transformers on this process's GPU.
    """
    from transformers import AutoModelForCausalLM

    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(adapter, dtype=dtype,
                                                    trust_remote_code=trusts_remote_code(adapter)).to(device())
    if quantization_config is not None:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, quantization_config=quantization_config,
                                                    device_map={"": device()},
                                                    trust_remote_code=trusts_remote_code(folder))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=trusts_remote_code(folder))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.to(device())


def load_scoring_model(folder: Path, adapter: Path | None, precision: str):
    """The model to score held-out rows with: ``folder`` with ``adapter`` merged in fp32 (exact), then cast
    to bf16 when scoring in ``bf16`` (the precision training used)."""
    model = load_causal_lm(folder, dtype=torch.float32, adapter=adapter)
    return model.to(torch.bfloat16) if precision == "bf16" else model
