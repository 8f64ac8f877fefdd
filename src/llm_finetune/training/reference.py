"""What the reference-model stages (dpo, kto) share: the start-adapter check, the key of the reference
log-probs, and their cache.

The reference is the start model (the base, or the base with an SFT adapter merged) evaluated once over
the training and validation rows; the result is a JSON file ``<key>.json`` in the stage's reference
cache, written aside and renamed, and reused by any later run with the same key: the rows, the base
model, the start adapter, the numerics (precision, attention) and the stage's format version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from llm_finetune.models.loading import load_tokenizer
from llm_finetune.provenance import file_digest
from llm_finetune.tokens.settings import TEMPLATE_FILE, saved_template

logger = logging.getLogger(__name__)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def check_start_adapter(start_adapter: Path | None, base_model: Path, base_model_info: dict, tokenize_params: dict,
                        stage: str) -> None:
    """A starting SFT adapter must be a LoRA of this base model, trained with this template."""
    if start_adapter is None:
        return
    folder = Path(start_adapter)
    if not (folder / "adapter_config.json").is_file():
        raise ValueError(f"{folder} holds a fully fine-tuned model, not a LoRA adapter: {stage}_sft starts from "
                         "LoRA SFT adapters (train.method: lora)")
    trained_on = json.loads((folder / "base_model.json").read_text()).get("fingerprint")
    if trained_on != base_model_info.get("fingerprint"):
        raise ValueError(f"the SFT adapter {folder} was trained on base model {trained_on}, {stage} uses "
                         f"{base_model_info.get('name')} ({base_model_info.get('fingerprint')})")
    saved = json.loads((folder / TEMPLATE_FILE).read_text())
    current = saved_template(tokenize_params, load_tokenizer(base_model))
    if saved["source"] != current["source"]:
        raise ValueError(f"the SFT adapter {folder} was trained with template {saved['template']!r}, the {stage} "
                         f"rows use {tokenize_params['template']!r}: set tokenize.template={saved['template']}")


def reference_key(identity: dict, base_model_info: dict, start_adapter: Path | None, attention: str,
                  precision: str) -> str:
    """16 hex digits over ``identity`` (the stage's rows digest and format) and what the numbers depend on."""
    digest = hashlib.sha256(json.dumps(identity | {
        "base": base_model_info.get("fingerprint"), "precision": precision, "attention": attention,
        "start": file_digest(start_adapter, ADAPTER_FILES)}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached_reference(cache_dir: Path, key: str, compute: Callable[[], dict]) -> dict:
    """The cached ``<key>.json`` (``reused: true``), or ``compute()`` written there atomically first."""
    cached = Path(cache_dir) / f"{key}.json"
    if cached.is_file():
        logger.info("Reusing reference log-probs %s (same rows, base model, start adapter and numerics)", key)
        return json.loads(cached.read_text()) | {"reused": True}
    started = time.perf_counter()
    content = {"key": key} | compute() | {"seconds": round(time.perf_counter() - started, 1)}
    logger.info("Reference log-probs %s in %.1f s", key, content["seconds"])
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    scratch = cached.with_suffix(".partial")
    scratch.write_text(json.dumps(content))
    scratch.rename(cached)
    return content | {"reused": False}
