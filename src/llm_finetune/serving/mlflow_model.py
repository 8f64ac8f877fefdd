"""A tuned model in MLflow's model registry, servable by ``mlflow models serve`` as a chat model.

:func:`log_chat_model` logs a model folder of the catalog (a stage's adapter, a whole tuned model, or
the export's merged folder) in MLflow's ``transformers`` flavour with the ``llm/v1/chat`` task: MLflow's
server then takes OpenAI-style chat requests (``{"messages": [...], "max_tokens": ...}``) on
``/invocations`` and answers with ``chat.completion`` objects. :func:`register` makes the logged model a
version of a registered model, tagged with the run's metrics. The tracking hook
(:class:`llm_finetune.hooks.TrackingHook`) calls both at the end of a run, from catalog metadata
(``tracking: {model: <stage>}``) and the ``mlflow_model`` parameters (``conf/base/parameters_mlflow_model.yml``).

**Merged weights, not the PEFT adapter.** MLflow can log a ``PeftModel`` and save only the adapter; the
base is then loaded at serving time from ``base_model_name_or_path`` (a Hub id) or ``base_model_path``.
Our adapters name a local, versioned folder (``/.../data/06_models/base_model/<version>/base_model``,
absolute, on the training machine): such a version would serve only on that machine and only while that
base version is kept, and full / freeze "adapters" hold a whole model anyway. So the adapter is merged
into its base in fp32 (exact: what evaluation scored) and the standalone model is logged, cast to
``mlflow_model.dtype``: one self-contained version per run that serves anywhere with the pip
requirements, at the cost of the base model's size per version (~540 MB fp32 for SmolLM2-135M, half in
bfloat16). An export's ``merged_model`` folder is already standalone and goes the same way.

**The training template travels on the tokenizer.** MLflow renders a chat request with
``tokenizer.apply_chat_template``; the tokenizer's own template (ChatML for SmolLM2) is not what the
adapter was trained on (alpaca by default), so the logged tokenizer's ``chat_template`` is the Jinja
translation of the training template (:func:`llm_finetune.tokens.templates.portable.to_jinja`), and the
model's ``generation_config`` ends replies at the template's end ids as generation in the pipeline does.
The MLflow model's metadata names the base model, the template and the source folder; a model card says
the same for the registry page. The pip requirements are pinned from this environment (no inference
subprocess). MLflow runs the input example through the logged model once (it only warns when that
fails), so the example asks for few tokens (``EXAMPLE_MAX_TOKENS``); the tests serve a registered
version for real.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

logger = logging.getLogger(__name__)

CHAT_TASK = "llm/v1/chat"
WEIGHTS = "merged"
REQUIREMENTS = ("mlflow", "transformers", "torch", "accelerate", "tokenizers", "safetensors", "jinja2")
DTYPES = ("float32", "bfloat16", "float16")
EXAMPLE_MAX_TOKENS = 16  # MLflow generates the example once at logging time: keep that cheap


@dataclass(frozen=True)
class ServingSettings:
    """What to log and register for one stage (the ``mlflow_model`` parameters; their YAML documents them)."""

    stage: str
    registered_name: str | None
    dtype: str = "float32"
    max_new_tokens: int = 256
    do_sample: bool = False
    example: str = "Give three tips for staying healthy."
    tag_exclude: tuple[str, ...] = ()

    @classmethod
    def for_stage(cls, params: dict | None, stage: str) -> ServingSettings | None:
        """The settings of ``stage`` in ``params["mlflow_model"]``, or ``None`` when the stage's model is not
        logged (no block for the stage, or ``log: false``). Bad values fail here, before anything is logged."""
        block = (params or {}).get("mlflow_model") or {}
        stage_block = (block.get("stages") or {}).get(stage)
        if not stage_block or not stage_block.get("log", True):
            return None
        dtype = block.get("dtype", cls.dtype)
        if dtype not in DTYPES:
            raise ValueError(f"mlflow_model.dtype is {dtype!r}; use one of {', '.join(DTYPES)}")
        name = stage_block.get("registered_name")
        if name is not None and not re.fullmatch(r"[\w.\-]+", str(name)):
            raise ValueError(f"mlflow_model.stages.{stage}.registered_name {name!r}: "
                             "use letters, digits, '.', '-', '_'")
        tags = block.get("version_tags") or {}
        return cls(stage=stage, registered_name=name, dtype=dtype,
                   max_new_tokens=int(block.get("max_new_tokens", cls.max_new_tokens)),
                   do_sample=bool(block.get("do_sample", cls.do_sample)),
                   example=str(block.get("example", cls.example)), tag_exclude=tuple(tags.get("exclude") or ()))


def input_example(settings: ServingSettings) -> dict:
    """A chat request as ``/invocations`` takes it (stored with the model: the UI's and the server's sample)."""
    return {"messages": [{"role": "user", "content": settings.example}],
            "max_tokens": min(settings.max_new_tokens, EXAMPLE_MAX_TOKENS)}


def _base_of(folder: Path) -> Path | None:
    """The base model an adapter folder was trained on (its ``adapter_config.json``), ``None`` for a whole
    model; relative paths are the project's (a kedro run's working directory)."""
    config = Path(folder) / "adapter_config.json"
    if not config.is_file():
        return None
    base = Path(json.loads(config.read_text())["base_model_name_or_path"])
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is an adapter of {base}, which holds no model (config.json): the "
                                "base model version it was trained on is needed to merge it")
    return base


def chat_parts(folder: Path, dtype: str = "float32"):
    """``(model, tokenizer, template)`` of a model folder, ready to log: an adapter merged into its base
    (in fp32, then cast to ``dtype``), the tokenizer's chat template set to the training template, and
    the model's end ids those of the template."""
    import torch

    from llm_finetune.evaluation.generation import end_token_ids
    from llm_finetune.models.loading import load_causal_lm, load_tokenizer
    from llm_finetune.tokens.settings import TEMPLATE_FILE
    from llm_finetune.tokens.templates import TOKENIZER, stop_token_ids, template_from_saved
    from llm_finetune.tokens.templates.portable import to_jinja

    folder = Path(folder)
    base = _base_of(folder)
    model = load_causal_lm(base, dtype=torch.float32, adapter=folder) if base else load_causal_lm(folder)
    model = model.to("cpu", getattr(torch, dtype)).eval()
    tokenizer = load_tokenizer(folder, padding_side="left")
    saved = folder / TEMPLATE_FILE
    template = template_from_saved(json.loads(saved.read_text()), tokenizer) if saved.is_file() else TOKENIZER
    if template == TOKENIZER and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{folder} has no {TEMPLATE_FILE} and its tokenizer no chat template: not a chat model")
    tokenizer.chat_template = to_jinja(template, tokenizer)
    end_ids = list(dict.fromkeys([*end_token_ids(model, tokenizer), *stop_token_ids(template, tokenizer)]))
    model.generation_config.eos_token_id = end_ids
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, template


def adds_sequence_prefix(tokenizer) -> bool:
    """Whether the served prompt must be tokenized with the tokenizer's special tokens (its BOS).

    Training puts the tokenizer's sequence prefix in front of a prompt once, not when the template renders
    it itself (:func:`llm_finetune.tokens.conversations.with_sequence_prefix`). transformers' pipeline adds
    it to every prompt text unless told not to (``add_special_tokens``, in the model config), which would
    double the BOS of ``llama3`` / ``mistral`` prompts on a Llama-family tokenizer.
    """
    from llm_finetune.tokens.conversations import sequence_prefix

    prefix = sequence_prefix(tokenizer)
    if not prefix:
        return True
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                             add_generation_prompt=True)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"][:len(prefix)] != prefix


def _card(source: str, template_name: str, base: dict, settings: ServingSettings):
    """A model card for the registry page (given, so MLflow does not look the model up on the Hub)."""
    from huggingface_hub import ModelCard, ModelCardData

    base_name = base.get("name") or "unknown"
    data = ModelCardData(tags=["llm_finetune", settings.stage, f"template:{template_name}"],
                         pipeline_tag="text-generation")
    text = (f"---\n{data.to_yaml()}\n---\n\n# {settings.registered_name or settings.stage}\n\n"
            f"`{settings.stage}` of llm_finetune: {source}, tuned from the base model `{base_name}` "
            f"(fingerprint {base.get('fingerprint', '?')}); standalone weights (any adapter merged) in "
            f"{settings.dtype}.\n\n"
            f"Prompts are rendered in the training template `{template_name}` (the tokenizer's chat template).\n")
    return ModelCard(text)


def pip_requirements() -> list[str]:
    """This environment's versions of what serving the model imports (local labels such as ``+cpu`` dropped)."""
    pinned = []
    for name in REQUIREMENTS:
        try:
            pinned.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pinned


def log_chat_model(folder: Path, settings: ServingSettings, source: str, name: str | None = None):
    """Log the model in ``folder`` to the active MLflow run as a ``transformers`` ``llm/v1/chat`` model.

    ``source`` says where it came from (``sft.adapter@<version>``): the model's name in chat replies and
    its metadata. Returns MLflow's ``ModelInfo`` (``model_uri`` is ``models:/<model id>``).
    """
    import mlflow

    model, tokenizer, template = chat_parts(folder, settings.dtype)
    template_name = template if isinstance(template, str) else template.name
    base_file = Path(folder) / "base_model.json"
    base = json.loads(base_file.read_text()) if base_file.is_file() else {}
    model.name_or_path = model.config._name_or_path = source  # not a Hub id ('@'): MLflow looks nothing up
    metadata = {"llm_finetune": {"stage": settings.stage, "source": source, "weights": WEIGHTS,
                                 "dtype": settings.dtype, "template": template_name,
                                 "base_model": base.get("name"), "base_model_fingerprint": base.get("fingerprint")}}
    info = mlflow.transformers.log_model(
        transformers_model={"model": model, "tokenizer": tokenizer}, name=name or f"{settings.stage}_chat_model",
        task=CHAT_TASK, input_example=input_example(settings), metadata=metadata,
        model_card=_card(source, template_name, base, settings),
        model_config={"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample,
                      "add_special_tokens": adds_sequence_prefix(tokenizer)},
        pip_requirements=pip_requirements(),
        tags={"stage": settings.stage, "template": template_name, "weights": WEIGHTS})
    logger.info("Logged %s to MLflow as a %s model (%s, template %s): %s", source, CHAT_TASK, WEIGHTS,
                template_name, info.model_uri)
    return info


def metric_tags(metrics: dict[str, float], settings: ServingSettings) -> dict[str, str]:
    """The run's metrics of the stage (``<stage>.<...>``) as version tags, without the bookkeeping
    namespaces in ``version_tags.exclude`` (``<stage>.align.``, ``<stage>.tokenize.``, ...)."""
    prefix = f"{settings.stage}."
    excluded = tuple(f"{prefix}{part}." for part in settings.tag_exclude)
    return {key: repr(value) for key, value in sorted(metrics.items())
            if key.startswith(prefix) and not key.startswith(excluded)}


def register(model_uri: str, settings: ServingSettings, run_id: str, extra_tags: dict | None = None):
    """A new version of ``settings.registered_name`` from ``model_uri``, tagged with the run's stage metrics
    (read back from the run, so call it once they are logged: at the end of the pipeline)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    tags = metric_tags(client.get_run(run_id).data.metrics, settings) | (extra_tags or {})
    version_info = mlflow.register_model(model_uri, settings.registered_name, tags=tags)
    logger.info("Registered models:/%s/%s with %d metric tags (serve it with `mlflow models serve -m "
                "models:/%s/%s --env-manager local`)", settings.registered_name, version_info.version,
                len(tags), settings.registered_name, version_info.version)
    return version_info
