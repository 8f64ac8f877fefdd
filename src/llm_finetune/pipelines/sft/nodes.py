"""Nodes of the ``sft`` pipeline: checks before anything expensive, and training the adapter."""

from __future__ import annotations

import logging
from pathlib import Path

from llm_finetune.evaluation.generation import check_generate_params
from llm_finetune.evaluation.judging.run import check_judges
from llm_finetune.io import ModelBundle
from llm_finetune.models.loading import load_tokenizer
from llm_finetune.models.precision import resolve_precision
from llm_finetune.models.registry import ModelSpec
from llm_finetune.provenance import checkpoint_key, package_versions, token_folder_key
from llm_finetune.tokens.settings import TEMPLATE_FILE, saved_template, settings_from_params
from llm_finetune.tokens.store import load_rows
from llm_finetune.training.settings import caps_in_effect, train_settings

logger = logging.getLogger(__name__)


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
    generation = check_generate_params(generate_params)
    settings = train_settings(train_params, "train")
    caps = caps_in_effect(settings, "train", dataset_plan, {"tokenize.cutoff_len": tokenize_params["cutoff_len"],
                                                            "generate.max_rows": generate_params.get("max_rows")})
    report = {"model": model_name, "source": spec.source, "template": tokenize_params["template"],
              "precision": resolve_precision(settings.precision), "caps": caps,
              "trust_remote_code": spec.trust_remote_code, "generate": generation,
              "judges": check_judges(judge_params, judge_credentials, model_registry)}
    logger.info("Preflight checks passed: %s", report)
    return report


def train_adapter(train_tokens: Path, val_tokens: Path, base_model: Path, base_model_info: dict,
                  tokenize_params: dict, train_params: dict, checkpoints: Path) -> tuple[ModelBundle, list[dict], dict]:
    """Train the adapter (``train``: what differs from :class:`~llm_finetune.training.settings.TrainSettings`).

    The adapter folder also holds the tokenizer, the template, the full settings and the base
    model's identity. Checkpoints go to ``checkpoints/<key>`` every ``train.save_steps`` steps, the
    key fixed by the tokenized data, the base model and every setting that changes the numbers;
    after an interruption, ``train.resume: true`` continues from the last one.
    """
    from llm_finetune.training.engine import fit
    from llm_finetune.training.objectives.language_model import LanguageModelObjective

    settings = train_settings(train_params, "train")
    objective = LanguageModelObjective(base_model, flatten=settings.attention == "flash_attention_2")
    data = {"train": token_folder_key(train_tokens), "val": token_folder_key(val_tokens)}
    folder = Path(checkpoints) / checkpoint_key(data, base_model_info, settings.as_params())
    result = fit(objective, load_rows(train_tokens).to_list(), load_rows(val_tokens).to_list(), settings,
                 checkpoint_dir=folder)
    info = result.info | {"versions": package_versions()}
    tokenizer = load_tokenizer(base_model)
    files = {TEMPLATE_FILE: saved_template(tokenize_params, tokenizer), "training_params.json": settings.as_params(),
             "base_model.json": base_model_info, "train_info.json": info}
    return ModelBundle(model=result.model, tokenizer=tokenizer, files=files), result.history, info
