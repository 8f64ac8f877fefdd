"""Which weights train: LoRA (optionally DoRA), full fine-tuning, or freeze (the last N layers).

``train.method``:

* ``lora``: peft adapters on ``lora.target_modules`` (``all-linear`` or names); the base
  stays frozen (in bf16 when training in bf16) and the adapter weights are fp32.
* ``qlora``: LoRA as above on a base quantized to 4-bit NF4 with double quantization by
  bitsandbytes (the QLoRA paper's recipe, LLaMA-Factory's ``quantization_bit: 4``), computing in
  bf16 (fp16 on GPUs without bf16). CUDA only: :func:`qlora_problems` names what is missing, and
  preflight refuses the run before anything loads. Install the ``[gpu]`` extra.
* ``full``: every weight trains, fp32 master weights under bf16 autocast.
* ``freeze``: only the last ``freeze.trainable_layers`` decoder layers train, optionally only
  their modules named in ``freeze.trainable_modules`` (e.g. ``[mlp]``); ``extra_modules``
  (e.g. ``[lm_head, norm]``) train as well. fp32 weights, as for ``full``, so the saved model
  keeps the base's exact weights where nothing was trained.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from llm_finetune.models.loading import load_causal_lm

logger = logging.getLogger(__name__)
METHODS = ("lora", "qlora", "full", "freeze")


def qlora_problems() -> list[str]:
    """What this machine lacks for ``method: qlora`` (empty: it can run)."""
    import importlib.util

    problems = []
    if not torch.cuda.is_available():
        problems.append("no CUDA device is visible (bitsandbytes' 4-bit kernels need an NVIDIA GPU)")
    if importlib.util.find_spec("bitsandbytes") is None:
        problems.append("the bitsandbytes package is not installed (pip install -e '.[gpu]')")
    return problems


def quantization_config(precision: str):
    """transformers ``BitsAndBytesConfig`` of the 4-bit NF4 base: double quantization, compute in the
    training precision (bf16, or fp16 on GPUs without bf16)."""
    from transformers import BitsAndBytesConfig

    compute = torch.float16 if precision == "fp16" else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute)


def half_dtype(precision: str) -> torch.dtype:
    """The dtype of frozen weights in ``precision`` (trainable weights stay fp32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def lora_config(params: dict):
    """peft ``LoraConfig`` from the ``lora`` parameters."""
    from peft import LoraConfig

    return LoraConfig(r=params["r"], lora_alpha=params["alpha"], lora_dropout=params["dropout"],
                      target_modules=params["target_modules"], use_dora=bool(params.get("use_dora")),
                      task_type="CAUSAL_LM", bias="none")


def prepare_model(base_model: Path, method: str, lora: dict, freeze: dict, precision: str,
                  gradient_checkpointing: bool = False):
    """The model with exactly the chosen weights trainable (fp32); returns ``(model, trainable, total)``.

    ``lora`` / ``freeze``: the settings of those methods (``train.lora``, ``train.freeze``).
    """
    if method not in METHODS:
        raise ValueError(f"train.method {method!r} is not one of {METHODS}")
    if method == "lora":
        from peft import get_peft_model

        model = get_peft_model(load_causal_lm(base_model, dtype=half_dtype(precision)), lora_config(lora))
    elif method == "qlora":
        from peft import get_peft_model, prepare_model_for_kbit_training

        problems = qlora_problems()
        if problems:
            raise RuntimeError("train.method qlora cannot run here: " + "; ".join(problems))
        base = load_causal_lm(base_model, dtype=half_dtype(precision),
                              quantization_config=quantization_config(precision))
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=gradient_checkpointing)
        model = get_peft_model(base, lora_config(lora))
    else:
        model = load_causal_lm(base_model, dtype=torch.float32)
        if method == "freeze":
            _freeze_all_but(model, freeze or {})
    model.config.use_cache = False  # training needs no KV cache; packed rows need none for their block mask
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    if gradient_checkpointing:
        model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    if not trainable:
        raise ValueError(f"train.method {method!r} left no trainable parameter; check train.freeze")
    logger.info("%s: %d trainable of %d parameters (%.2f%%), precision %s", method, trainable, total,
                100 * trainable / total, precision)
    return model, trainable, total


def _freeze_all_but(model, freeze: dict) -> None:
    n_layers = model.config.num_hidden_layers
    last = int(freeze.get("trainable_layers", 2))
    if not 0 < last <= n_layers:
        raise ValueError(f"train.freeze.trainable_layers must be 1..{n_layers}, got {last}")
    layers = "|".join(str(i) for i in range(n_layers - last, n_layers))
    modules = freeze.get("trainable_modules") or []
    pattern = re.compile(rf"\.layers\.({layers})\." + (rf".*({'|'.join(map(re.escape, modules))})" if modules else ""))
    extra = tuple(freeze.get("extra_modules") or [])
    for name, parameter in model.named_parameters():
        parameter.requires_grad = bool(pattern.search(name)) or any(
            name.startswith(f"{m}.") or f".{m}." in name for m in extra)
