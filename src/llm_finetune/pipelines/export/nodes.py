"""Nodes of the ``export`` pipeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from llm_finetune.io import ModelBundle
from llm_finetune.models.loading import load_causal_lm, load_tokenizer

logger = logging.getLogger(__name__)
CARRIED_FILES = ("prompt_template.json", "training_params.json", "base_model.json", "train_info.json")


def merge_adapter(base_model: Path, adapter: Path, export_params: dict) -> ModelBundle:
    """Base model + LoRA adapter merged into plain weights (``export.dtype``: float32 | bfloat16).

    The folder is a standalone transformers model (safetensors, tokenizer with its chat
    template) and keeps the adapter's template and training records next to it.
    """
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[export_params["dtype"]]
    model = load_causal_lm(base_model, dtype=dtype, adapter=adapter)
    files = {name: json.loads((Path(adapter) / name).read_text()) for name in CARRIED_FILES
             if (Path(adapter) / name).is_file()}
    files["export.json"] = {"adapter": str(adapter), "base_model": str(base_model), "dtype": export_params["dtype"]}
    logger.info("Merged %s into %s (%s)", adapter, base_model, export_params["dtype"])
    return ModelBundle(model=model, tokenizer=load_tokenizer(adapter), files=files)
