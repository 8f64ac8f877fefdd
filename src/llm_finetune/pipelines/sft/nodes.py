"""Nodes of the ``sft`` pipeline: checks, base model, tokenization and LoRA training."""

from __future__ import annotations

import json
import logging
import platform
from importlib.metadata import version
from pathlib import Path

from llm_finetune.io import ModelBundle
from llm_finetune.judging.run import check_judges
from llm_finetune.models.loading import load_tokenizer, resolve_precision
from llm_finetune.models.materialize import materialize
from llm_finetune.models.registry import ModelSpec
from llm_finetune.templates import check_template
from llm_finetune.tokenization import tokenize_records
from llm_finetune.tracking import MlflowLossCallback

logger = logging.getLogger(__name__)
TEMPLATE_FILE = "prompt_template.json"
REQUIRED_TRAIN_KEYS = ("seed", "precision", "epochs", "batch_size", "learning_rate", "lora")


def preflight_checks(dataset_plan: list[dict], model_name: str, model_registry: dict, tokenize_params: dict,
                     train_params: dict, judge_params: dict, judge_credentials: dict) -> dict:
    """Fail before anything expensive: data kind, model entry, template, precision, judge endpoint.

    Args:
        dataset_plan: the resolved datasets; sft needs conversation records.
        model_name: ``model``, a key of ``model_registry``.
        tokenize_params: ``tokenize`` (template, cutoff_len, mask_prompt).
        train_params: ``train``.
        judge_params: ``judge``; when ``judge.llm`` is set its endpoint must answer now.
        model_registry: also validates a ``judge.local`` registry entry.
        judge_credentials: credentials for the judge (``judge_api`` in credentials.yml).
    """
    wrong_kind = [f"{d['name']} ({d['kind']})" for d in dataset_plan if d["kind"] != "conversation"]
    if wrong_kind:
        raise ValueError(f"sft trains on conversations; data.datasets holds {', '.join(wrong_kind)}. "
                         "Preference data is for the rm / dpo stages, text for pt.")
    spec = ModelSpec.from_registry(model_registry, model_name)
    if spec.source != "hub":
        spec.locate()
    check_template(tokenize_params["template"])
    missing = [key for key in REQUIRED_TRAIN_KEYS if key not in train_params]
    if missing:
        raise ValueError(f"train parameters lack: {', '.join(missing)}")
    report = {"model": model_name, "source": spec.source, "template": tokenize_params["template"],
              "precision": resolve_precision(train_params["precision"]),
              "judges": check_judges(judge_params, judge_credentials, model_registry)}
    logger.info("Preflight checks passed: %s", report)
    return report


def prepare_base_model(model_name: str, model_registry: dict, cache_dir: Path, preflight: dict) -> tuple[Path, dict]:
    """Materialise the base model as a clean transformers folder, reusing a cached conversion."""
    spec = ModelSpec.from_registry(model_registry, model_name)
    fingerprint = spec.fingerprint()
    reused = (Path(cache_dir) / f"{spec.name}-{fingerprint}" / "source.json").is_file()
    folder = materialize(spec, Path(cache_dir))
    info = json.loads((folder / "source.json").read_text()) | {"reused": reused}
    return folder, info


def tokenize_split(records: list[dict], base_model: Path, tokenize_params: dict) -> tuple[list[dict], list[dict], dict]:
    """Tokenize one split with ``tokenize.template``, ``tokenize.cutoff_len`` and ``tokenize.mask_prompt``."""
    tokenizer = load_tokenizer(base_model)
    check_template(tokenize_params["template"], tokenizer)
    return tokenize_records(records, tokenize_params["template"], tokenizer, tokenize_params["cutoff_len"],
                            tokenize_params["mask_prompt"])


def train_adapter(train_tokens: list[dict], val_tokens: list[dict], base_model: Path, base_model_info: dict,
                  tokenize_params: dict, train_params: dict) -> tuple[ModelBundle, list[dict], dict]:
    """Train a LoRA adapter; the adapter folder also holds tokenizer, template and parameters."""
    from llm_finetune.training import train_lora

    rows = train_tokens[: train_params["max_train_rows"]] if train_params.get("max_train_rows") else train_tokens
    model, tokenizer, history, info = train_lora(rows, val_tokens, base_model, train_params,
                                                 callbacks=[MlflowLossCallback()])
    info |= {"train_rows": len(rows), "val_rows": len(val_tokens), "versions": package_versions()}
    files = {TEMPLATE_FILE: {"template": tokenize_params["template"], "cutoff_len": tokenize_params["cutoff_len"],
                             "mask_prompt": tokenize_params["mask_prompt"]},
             "training_params.json": train_params, "base_model.json": base_model_info, "train_info.json": info}
    return ModelBundle(model=model, tokenizer=tokenizer, files=files), history, info


def package_versions() -> dict:
    """Versions of the packages that decide a run's numbers."""
    names = ("torch", "transformers", "peft", "accelerate", "kedro")
    return {"python": platform.python_version()} | {name: version(name) for name in names}
