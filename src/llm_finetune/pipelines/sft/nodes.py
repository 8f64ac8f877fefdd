"""Nodes of the ``sft`` pipeline: checks, base model, tokenization and LoRA training."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from importlib.metadata import version
from pathlib import Path

from llm_finetune.io import ModelBundle
from llm_finetune.judging.run import check_judges
from llm_finetune.models.loading import resolve_precision
from llm_finetune.models.materialize import materialize
from llm_finetune.models.registry import ModelSpec
from llm_finetune.pipelines.tokenize.nodes import settings_from_params
from llm_finetune.templates import load_template, template_source
from llm_finetune.token_store import load_rows
from llm_finetune.tracking import MlflowLossCallback
from llm_finetune.tuning_methods import METHODS

logger = logging.getLogger(__name__)
TEMPLATE_FILE = "prompt_template.json"
REQUIRED_TRAIN_KEYS = ("seed", "precision", "epochs", "batch_size", "learning_rate", "lora")


def preflight_checks(dataset_plan: list[dict], model_name: str, model_registry: dict, tokenize_params: dict,
                     train_params: dict, generate_params: dict, judge_params: dict, judge_credentials: dict) -> dict:
    """Fail before anything expensive: data kind, model entry, template, precision, judge endpoint.

    Args:
        dataset_plan: the resolved datasets; sft needs conversation records.
        model_name: ``model``, a key of ``model_registry``.
        tokenize_params: ``tokenize`` (template, cutoff_len, loss_on, truncation, packing).
        train_params: ``train``.
        generate_params: ``generate``; ``generate.template``, when set, must be ``tokenize.template``.
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
    settings_from_params(tokenize_params)
    if generate_params.get("template") and generate_params["template"] != tokenize_params["template"]:
        raise ValueError(f"generate.template {generate_params['template']!r} differs from tokenize.template "
                         f"{tokenize_params['template']!r}: the adapter must generate with its training template")
    if train_params.get("method", "lora") not in METHODS:
        raise ValueError(f"train.method {train_params['method']!r} is not one of {METHODS}")
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


def train_adapter(train_tokens: Path, val_tokens: Path, base_model: Path, base_model_info: dict,
                  tokenize_params: dict, train_params: dict, checkpoints: Path) -> tuple[ModelBundle, list[dict], dict]:
    """Train a LoRA adapter; the adapter folder also holds tokenizer, template and parameters.

    Checkpoints go to ``checkpoints/<key>`` every ``train.save_steps`` steps, the key fixed by
    the tokenized data, the base model and every parameter that changes the numbers; after an
    interruption, ``train.resume: true`` continues from the last one.
    """
    from llm_finetune.training import train_model

    train_rows, val_rows = load_rows(train_tokens).to_list(), load_rows(val_tokens).to_list()
    if train_params.get("max_train_rows"):
        train_rows = train_rows[: train_params["max_train_rows"]]
    folder = Path(checkpoints) / checkpoint_key(train_tokens, val_tokens, base_model_info, train_params)
    model, tokenizer, history, info = train_model(train_rows, val_rows, base_model, train_params,
                                                 callbacks=[MlflowLossCallback()], checkpoint_dir=folder)
    info |= {"train_rows": len(train_rows), "val_rows": len(val_rows), "versions": package_versions()}
    files = {TEMPLATE_FILE: saved_template(tokenize_params, tokenizer),
             "training_params.json": train_params, "base_model.json": base_model_info, "train_info.json": info}
    return ModelBundle(model=model, tokenizer=tokenizer, files=files), history, info


def checkpoint_key(train_tokens: Path, val_tokens: Path, base_model_info: dict, train_params: dict) -> str:
    """Which run a checkpoint belongs to: data, base model and numeric parameters (not resume / saving)."""
    bookkeeping = {"resume", "keep_checkpoints", "save_steps", "logging_steps"}
    identity = {"train": json.loads((Path(train_tokens) / "stats.json").read_text()).get("cache_key"),
                "val": json.loads((Path(val_tokens) / "stats.json").read_text()).get("cache_key"),
                "base": base_model_info.get("fingerprint"),
                "params": {k: v for k, v in train_params.items() if k not in bookkeeping}}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def saved_template(tokenize_params: dict, tokenizer) -> dict:
    """What travels with the adapter: the template's name and full text, and the tokenize settings."""
    template = load_template(tokenize_params["template"], tokenize_params.get("template_dir"))
    source = template_source(template, tokenizer)
    keys = ("cutoff_len", "loss_on", "truncation", "packing")
    return {"template": tokenize_params["template"], "source": source} | {k: tokenize_params[k] for k in keys}


def package_versions() -> dict:
    """Versions of the packages that decide a run's numbers."""
    names = ("torch", "transformers", "peft", "accelerate", "kedro")
    return {"python": platform.python_version()} | {name: version(name) for name in names}
