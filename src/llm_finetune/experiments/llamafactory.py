"""A LLaMA-Factory training YAML as an experiment file of this project.

``llamafactory-cli train x.yaml`` reads LLaMA-Factory's own arguments and transformers'
``TrainingArguments``. :func:`translate` maps each key onto our pipelines and parameters (``stage``
picks the pipeline), and fills in LLaMA-Factory's and transformers' defaults for the keys the file
leaves out: a file that says nothing of ``learning_rate`` trains at transformers' 5e-5 there, so it
does here, not at our default. The caps our stages ship with (``max_train_rows``, pt's ``max_steps``)
are lifted: LLaMA-Factory has none.

Every key ends in one of three lists, all printed: mapped (with its value), accepted without
effect (``output_dir``, ``report_to``, worker counts: outputs here are catalog datasets, tracking is
MLflow), or refused. A key we cannot honour at the value given (``deepspeed``, ``quantization_bit``,
multimodal, ``fp16``, a start adapter, packing that lets samples attend to each other, ...) makes the
translation fail with the whole list, never a run that silently does something else. A key that is
not a LLaMA-Factory training argument is refused with the nearest known one.

Chat templates map to ours only where the rendered text is identical (``llama3``; checked against
LLaMA-Factory's rendering by ``tests/experiments/test_llamafactory.py``); the others (``alpaca``,
``chatml``/``qwen``: LLaMA-Factory trains a newline after each answer, ``mistral``, ``vicuna``, ...)
use the model's own chat template, and the translation says so.

Hand-written: LLaMA-Factory is not a library to import here (it pins its own transformers), and the
mapping is a table of our decisions, not a conversion a package could make.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llm_finetune.experiments.llamafactory_keys import (
    ATTENTION,
    EXACT_TEMPLATES,
    KNOWN_KEYS,
    MIX,
    NEAREST_TEMPLATES,
    NO_EFFECT,
    ONLY_DEFAULT,
    PREF_LOSSES,
    STAGES,
    TRAINING_KEYS,
)


class TranslationError(ValueError):
    """A LLaMA-Factory YAML this project cannot run as it is; the message lists every key and why."""


def transformers_defaults() -> dict:
    """transformers' ``TrainingArguments`` defaults for the keys we map (LLaMA-Factory changes none of them)."""
    from transformers import TrainingArguments

    fields = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    return {key: fields[key] for key in TRAINING_KEYS if key in fields} | {"warmup_steps": fields["warmup_steps"]}


@dataclass
class Translation:
    """The experiment a LLaMA-Factory YAML becomes, and what happened to each of its keys."""

    source: str
    pipeline: str
    params: dict = field(default_factory=dict)
    mapped: list[tuple[str, str, object]] = field(default_factory=list)
    defaults: list[tuple[str, str, object]] = field(default_factory=list)
    no_effect: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def experiment(self) -> dict:
        return {"run": {"pipeline": self.pipeline, "params": self.params}}

    def experiment_yaml(self) -> str:
        header = (f"# Translated from the LLaMA-Factory training YAML {self.source} by `llm-finetune translate`;\n"
                  "# LLaMA-Factory's and transformers' defaults are filled in where that file is silent.\n"
                  "#   kedro run --config <this file>\n")
        return header + yaml.safe_dump(self.experiment(), sort_keys=False, allow_unicode=True)

    def render(self) -> str:
        lines = [self.experiment_yaml().rstrip(), "#", "# from the file:"]
        lines += [f"#   {lf} -> {ours} = {value!r}" for lf, ours, value in self.mapped]
        if self.defaults:
            lines.append("# LLaMA-Factory / transformers defaults (the file does not set them):")
            lines += [f"#   {lf} -> {ours} = {value!r}" for lf, ours, value in self.defaults]
        if self.no_effect:
            lines.append("# accepted, no effect here:")
            lines += [f"#   {key}: {why}" for key, why in self.no_effect]
        if self.notes:
            lines.append("# differences to know:")
            lines += [f"#   - {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


class _Builder:
    """Collects the parameters, the key lists and the refusals while the keys are read."""

    def __init__(self, data: dict, translation: Translation):
        self.data, self.out, self.problems = data, translation, []

    def value(self, key: str, default=None):
        return self.data.get(key, default)

    def put(self, lf_key: str | None, ours: str | tuple, value, default_used: bool = False) -> None:
        """Set ``ours`` (``a.b.c``, or a tuple where a name holds dots) and note where it came from."""
        path = tuple(ours.split(".")) if isinstance(ours, str) else ours
        node = self.out.params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
        if lf_key is not None:
            (self.out.defaults if default_used else self.out.mapped).append((lf_key, ".".join(path), value))

    def take(self, lf_key: str, ours: str, default, convert=lambda v: v) -> None:
        """``ours`` = the file's value of ``lf_key``, or LLaMA-Factory's default for it."""
        present = lf_key in self.data
        self.put(lf_key, ours, convert(self.data[lf_key] if present else default), default_used=not present)

    def refuse(self, key: str, why: str) -> None:
        self.problems.append(f"{key}: {why}")


def _is_default(value, default) -> bool:
    unset = (None, "", False, 0)
    return value == default or (value in unset and default in unset and value is not True)


def _number(value):
    return float(value) if isinstance(value, str) else value


def _names(value) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else list(value)


def translate(data: dict, source: str | Path = "<yaml>", project_path: Path | None = None,
              model_registry: dict | None = None) -> Translation:
    """The experiment for LLaMA-Factory training arguments ``data`` (see the module docstring).

    ``model_registry``: the project's, so a Hub id or folder already registered keeps its entry's name.
    Relative paths (a local model, ``dataset_dir``) are read from the current directory, as LLaMA-Factory does.
    """
    stage = data.get("stage", "sft")
    if stage not in STAGES:
        raise TranslationError(f"{source}: stage {stage!r} is not supported (pt, sft, rm, dpo, kto"
                               + ("; ppo: this project's online RL is the grpo pipeline)" if stage == "ppo" else ")"))
    pipeline, train, data_block = STAGES[stage]
    build = _Builder(data, Translation(source=str(source), pipeline=pipeline))
    for key in sorted(set(data) - KNOWN_KEYS):
        near = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1, cutoff=0.75)
        build.refuse(key, "not a LLaMA-Factory training argument this translation knows"
                     + (f"; did you mean {near[0]}?" if near else ""))
    for key, (default, why) in ONLY_DEFAULT.items():
        if key in data and not _is_default(data[key], default):
            build.refuse(key, f"{data[key]!r}: {why}")
    if not data.get("do_train"):
        build.refuse("do_train", "not true: LLaMA-Factory would train nothing (evaluation-only runs are not mapped)")
    build.out.no_effect = [(key, why) for key, why in NO_EFFECT.items() if key in data]
    _model(build, model_registry or {}, Path.cwd())
    _method(build, stage, train)
    _preference(build, stage)
    _data(build, stage, data_block, Path.cwd(), project_path)
    _training(build, train)
    if build.problems:
        raise TranslationError(f"{source}: {len(build.problems)} key(s) cannot be honoured, so nothing was run:\n  "
                               + "\n  ".join(build.problems))
    return build.out


def _model(build: _Builder, registry: dict, cwd: Path) -> None:
    name_or_path = build.value("model_name_or_path")
    if not name_or_path:
        build.refuse("model_name_or_path", "missing")
        return
    folder = Path(str(name_or_path)).expanduser()
    folder = folder if folder.is_absolute() else cwd / folder
    if folder.is_dir():
        entry = {"source": "local", "path": str(folder.resolve())}
        same = [n for n, e in registry.items() if (e or {}).get("source") == "local"
                and e.get("path") and Path(e["path"]).expanduser().resolve() == folder.resolve()]
    else:
        entry = {"source": "hub", "repo_id": str(name_or_path)}
        if build.value("model_revision", "main") != "main":
            entry["revision"] = build.value("model_revision")
        same = [n for n, e in registry.items() if (e or {}).get("repo_id") == name_or_path
                and (e.get("revision") or "main") == entry.get("revision", "main")]
    if build.value("trust_remote_code"):
        entry["trust_remote_code"] = True
    name = same[0] if same else "lf-" + "-".join(Path(str(name_or_path)).parts[-2:]).lower().replace("_", "-")
    build.put("model_name_or_path", "model", name)
    if not same or "trust_remote_code" in entry:
        build.put(None, ("model_registry", name), entry if not same else {"trust_remote_code": True})


def _method(build: _Builder, stage: str, train: str) -> None:
    method = build.value("finetuning_type", "lora")
    if method not in ("lora", "full", "freeze"):
        build.refuse("finetuning_type", f"{method!r} is not supported (lora, full, freeze)")
        return
    bits = build.value("quantization_bit")
    if bits is not None and (int(bits) != 4 or method != "lora" or stage not in ("sft", "pt")):
        build.refuse("quantization_bit", f"{bits!r}: QLoRA here is 4-bit NF4 under LoRA, in sft and pt")
    if bits is not None and build.value("quantization_method", "bnb") not in ("bnb", "bitsandbytes"):
        build.refuse("quantization_method", f"{build.value('quantization_method')!r}: only bitsandbytes")
    if bits is not None:
        build.put("quantization_bit", f"{train}.method", "qlora")
    else:
        build.take("finetuning_type", f"{train}.method", "lora")
    if method == "lora":
        rank = int(build.value("lora_rank", 8))
        build.take("lora_rank", f"{train}.lora.r", 8, int)
        build.take("lora_alpha", f"{train}.lora.alpha", rank * 2, lambda v: float(v if v is not None else rank * 2))
        build.take("lora_dropout", f"{train}.lora.dropout", 0.0, float)
        build.take("lora_target", f"{train}.lora.target_modules", "all",
                   lambda v: "all-linear" if v == "all" else _names(v))
        build.take("use_dora", f"{train}.lora.use_dora", False, bool)
    elif method == "freeze":
        layers = int(build.value("freeze_trainable_layers", 2))
        if layers < 1:
            build.refuse("freeze_trainable_layers", f"{layers}: training the first layers (a negative count) is not "
                                                    "supported; a positive N trains the last N")
        build.take("freeze_trainable_layers", f"{train}.freeze.trainable_layers", 2, int)
        build.take("freeze_trainable_modules", f"{train}.freeze.trainable_modules", "all",
                   lambda v: [] if v == "all" else _names(v))
        build.take("freeze_extra_modules", f"{train}.freeze.extra_modules", None, lambda v: _names(v) if v else [])


def _preference(build: _Builder, stage: str) -> None:
    if stage == "dpo":
        loss = build.value("pref_loss", "sigmoid")
        if loss not in PREF_LOSSES:
            build.refuse("pref_loss", f"{loss!r} is not supported ({', '.join(PREF_LOSSES)}; kto_pair: the kto stage)")
        build.take("pref_loss", "dpo.loss_type", "sigmoid")
        build.take("pref_beta", "dpo.beta", 0.1, _number)
        build.take("dpo_label_smoothing", "dpo.label_smoothing", 0.0, _number)
        build.take("simpo_gamma", "dpo.gamma", 0.5, _number)
    elif stage == "kto":
        build.take("pref_beta", "kto.beta", 0.1, _number)
        build.take("kto_chosen_weight", "kto.desirable_weight", 1.0, _number)
        build.take("kto_rejected_weight", "kto.undesirable_weight", 1.0, _number)
    else:
        for key in ("pref_beta", "pref_loss", "simpo_gamma", "kto_chosen_weight", "kto_rejected_weight"):
            if key in build.data:
                build.out.no_effect.append((key, f"a preference setting; stage {stage} does not use it"))


def _inside(path: Path, project_path: Path | None) -> str:
    """``path`` relative to the project when it lies inside it (kedro runs there), else absolute."""
    path = path.resolve()
    if project_path is not None and path.is_relative_to(Path(project_path).resolve()):
        return str(path.relative_to(Path(project_path).resolve()))
    return str(path)


def _data(build: _Builder, stage: str, block: str, cwd: Path, project_path: Path | None) -> None:
    names = _names(build.value("dataset") or [])
    if not names:
        build.refuse("dataset", "missing: name the dataset_info.json entries to train on")
    build.put("dataset", f"{block}.datasets", names)
    info = Path(str(build.value("dataset_dir", "data"))).expanduser()
    info = (info if info.is_absolute() else cwd / info) / "dataset_info.json"
    if names and not info.is_file():
        build.refuse("dataset_dir", f"{info} does not exist (LLaMA-Factory reads dataset_info.json there)")
    build.take("dataset_dir", f"{block}.dataset_info", "data", lambda v: _inside(info, project_path))
    build.take("max_samples", f"{block}.max_rows", None, lambda v: int(v) if v else 0)
    val_size = _number(build.value("val_size", 0.0))
    if val_size >= 1:
        build.refuse("val_size", f"{val_size}: a row count; give a fraction below 1")
    elif val_size:
        build.take("val_size", f"{block}.split.train_fraction", None, lambda v: round(1 - 0.10 - val_size, 6))
        build.put(None, f"{block}.split.test_fraction", 0.10)
    build.out.notes.append("the split also holds out a test split (10 %) for generation and judging"
                           + ("" if val_size else ", and validation takes the rest (5 %) although val_size is 0")
                           + "; rows are assigned by a stable hash, not transformers' shuffled train_test_split")
    strategy = build.value("mix_strategy", "concat")
    if strategy not in MIX:
        build.refuse("mix_strategy", f"{strategy!r} is not supported ({', '.join(MIX)})")
    else:
        build.take("mix_strategy", f"{block}.mix.strategy", "concat", lambda v: MIX[v][0])
        if MIX[strategy][1]:
            build.put(None, f"{block}.mix.stopping", MIX[strategy][1])
    if "interleave_probs" in build.data:
        build.take("interleave_probs", f"{block}.mix.probabilities", None, lambda v: [float(p) for p in _names(str(v))])
    if stage == "pt":
        if build.value("packing") is False:
            build.refuse("packing", "false: pt trains on concatenated blocks here (one document per row is not mapped)")
        build.take("cutoff_len", "pt.block_size", 2048, int)
        build.put(None, "pt.remainder", "drop")
        build.put(None, "pt.cross_document_attention", True)
        build.out.notes.append("pt: LLaMA-Factory drops the remainder of every 1,000 documents; here only the last "
                               "one, so a few more blocks are trained")
        if "template" in build.data:
            build.out.no_effect.append(("template", "pt trains on raw text"))
        return
    packing = bool(build.value("packing") or build.value("neat_packing"))
    if build.value("packing") and not build.value("neat_packing"):
        build.refuse("packing", "true without neat_packing lets packed samples attend to each other; set "
                                "neat_packing: true (packing without cross-attention)")
    build.take("cutoff_len", "tokenize.cutoff_len", 2048, lambda v: int(v) - 1 if packing else int(v))
    build.put("neat_packing" if packing else None, "tokenize.packing", "greedy" if packing else "none")
    if packing:
        build.put(None, "tokenize.truncation", "drop")  # LLaMA-Factory drops packed samples over cutoff_len
    loss_on = "all" if build.value("train_on_prompt") else "last_assistant" if build.value("mask_history") \
        else "assistant"
    build.put("train_on_prompt" if "train_on_prompt" in build.data else "mask_history"
              if "mask_history" in build.data else None, "tokenize.loss_on", loss_on)
    _template(build)


def _template(build: _Builder) -> None:
    name = build.value("template")
    if name in EXACT_TEMPLATES:
        build.take("template", "tokenize.template", None, lambda v: EXACT_TEMPLATES[v])
        return
    build.put("template" if name else None, "tokenize.template", "tokenizer")
    if name is None:
        build.out.notes.append("no template: the model's own chat template (LLaMA-Factory: the same, or its `empty` "
                               "template when the tokenizer has none)")
    else:
        nearest = NEAREST_TEMPLATES.get(name, "none")
        build.out.notes.append(f"template {name}: no template here renders LLaMA-Factory's text exactly (nearest: "
                               f"{nearest}); the model's own chat template is used. Set tokenize.template to choose")


def _training(build: _Builder, train: str) -> None:
    defaults = transformers_defaults()
    whole = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "seed",
             "logging_steps", "save_steps")
    for lf_key, ours in TRAINING_KEYS.items():
        if lf_key == "max_steps":
            convert = lambda v: None if int(v) <= 0 else int(v)  # noqa: E731
        elif lf_key in ("lr_scheduler_type", "optim"):
            convert = lambda v: str(getattr(v, "value", v))  # noqa: E731  transformers' defaults are enums
        elif lf_key in whole:
            convert = lambda v: int(float(v))  # noqa: E731
        else:
            convert = lambda v: None if v is None else float(v)  # noqa: E731
        build.take(lf_key, f"{train}.{ours}", defaults.get(lf_key), convert)
    steps, ratio = build.value("warmup_steps", 0), build.value("warmup_ratio")
    if steps or not ratio:
        build.take("warmup_steps", f"{train}.warmup_steps", 0, int)
    else:
        build.take("warmup_ratio", f"{train}.warmup_steps", None, float)
    logging_steps = build.value("logging_steps", defaults["logging_steps"])
    build.take("eval_steps", f"{train}.eval_steps", logging_steps, lambda v: int(v if v else logging_steps))
    if build.value("fp16"):
        build.take("fp16", f"{train}.precision", False, lambda v: "fp16")
    else:
        build.take("bf16", f"{train}.precision", False, lambda v: "bf16" if v else "fp32")
    if not build.value("bf16") and not build.value("fp16"):
        build.out.notes.append("bf16 is off: fp32, as LLaMA-Factory on a CPU (on a bf16 GPU it infers bf16 from the "
                               "model; set precision: bf16 for that)")
    attention = build.value("flash_attn", "auto")
    if attention not in ATTENTION:
        build.refuse("flash_attn", f"{attention!r} is not supported ({', '.join(ATTENTION)})")
    else:
        build.take("flash_attn", f"{train}.attention", "auto", lambda v: ATTENTION[v])
    build.take("disable_gradient_checkpointing", f"{train}.gradient_checkpointing", False,
               lambda v: not v and build.value("gradient_checkpointing", True) is not False)
    build.put(None, f"{train}.group_by_length", False)  # transformers' random sampling, as LLaMA-Factory
    build.put(None, f"{train}.max_train_rows", None)  # our stages' caps: LLaMA-Factory has none
