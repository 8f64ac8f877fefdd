"""Typed training settings: every knob of the engine, its default and its check, in one place.

Each stage's parameters (``train`` for sft, ``rm.train``, ``dpo.train``, ``pt.train``) hold only
what differs from these defaults; :func:`train_settings` fills in the rest and validates the
result in preflight, before any model is loaded. An unknown key is an error that names it with
the stage's prefix and the nearest known key (``rm.train.lerning_rate: unknown key; did you
mean learning_rate?``), a wrong value one that names the key and the accepted range.

pydantic does the type checks and coercion (a YAML ``1e-3`` read as a string, ``"true"`` from
``--params``); the nearest-key hint is ours, from :mod:`difflib`.
"""

from __future__ import annotations

import difflib
import logging
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

logger = logging.getLogger(__name__)
METHODS = ("lora", "qlora", "full", "freeze")
LAUNCHERS = ("torchrun", "accelerate")
# TrainingArguments a stage's settings own: set them by their own key, not through trainer_args
OWNED_TRAINER_ARGS = {
    "seed": "seed", "data_seed": "seed", "num_train_epochs": "epochs", "max_steps": "max_steps",
    "per_device_train_batch_size": "batch_size", "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps", "learning_rate": "learning_rate",
    "weight_decay": "weight_decay", "lr_scheduler_type": "lr_scheduler", "warmup_steps": "warmup_steps",
    "warmup_ratio": "warmup_steps", "max_grad_norm": "max_grad_norm", "bf16": "precision", "fp16": "precision",
    "eval_steps": "eval_steps", "logging_steps": "logging_steps", "save_steps": "save_steps", "optim": "optimizer",
    "neftune_noise_alpha": "neftune_noise_alpha", "gradient_checkpointing": "gradient_checkpointing",
    "output_dir": "the stage's checkpoints dataset", "resume_from_checkpoint": "resume",
    "report_to": "MLflow (kedro-mlflow)", "use_cpu": "the device in use",
    "torch_compile": "compile", "torch_compile_backend": "compile", "torch_compile_mode": "compile",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(_Strict):
    """peft LoRA: rank, scale, dropout and the modules it adapts."""

    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)  # peft's and LLaMA-Factory's default; a mask per module costs ~20% on CPU
    target_modules: str | list[str] = "all-linear"
    use_dora: bool = False


class FreezeSettings(_Strict):
    """``method: freeze``: which decoder layers (the last N) and modules train."""

    trainable_layers: int = Field(2, ge=1)
    trainable_modules: list[str] = []  # only these module names inside them, e.g. [mlp] (empty: all)
    extra_modules: list[str] = []  # e.g. [norm, lm_head]


class EarlyStoppingSettings(_Strict):
    """Stop when val loss has not improved by ``min_delta`` for ``patience`` evaluations."""

    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)


class AutoBatchSettings(_Strict):
    """``batch_size: auto``: the micro-batch sizes to try and the limits of the choice
    (:mod:`llm_finetune.training.auto_batch`)."""

    candidates: list[Annotated[int, Field(ge=1)]] = [4, 8, 16, 32, 64, 128]  # tried smallest first
    # rows per optimiser step, fixed: micro-batch x accumulation steps, so the choice changes speed, not the training
    rows_per_step: int | None = Field(None, ge=1)
    memory_limit_gb: float | None = Field(None, gt=0)  # None: 90% of the GPU's memory, or 80% of the free RAM
    min_gain: float = Field(0.05, ge=0)  # a larger micro-batch is chosen only when this much faster

    @model_validator(mode="after")
    def _usable(self):
        if not self.candidates:
            raise ValueError("auto_batch.candidates needs at least one micro-batch size")
        if self.rows_per_step and not [size for size in self.candidates if self.rows_per_step % size == 0]:
            raise ValueError(f"auto_batch.rows_per_step {self.rows_per_step}: no candidate in {self.candidates} "
                             "divides it")
        return self


class DistributedSettings(_Strict):
    """``train.distributed``: train in N processes started by a launcher, the train node their driver.

    ``processes`` per node (GPUs, or CPU processes with gloo); ``nnodes`` > 1 needs the same command
    on every node (the driver logs it) and ``data/`` on storage all nodes share. ``accelerate_config``:
    an ``accelerate config`` file (FSDP, DeepSpeed) for ``launcher: accelerate``.
    """

    processes: int = Field(2, ge=1)
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    master_addr: str = "127.0.0.1"
    master_port: int = Field(29500, ge=1, le=65535)
    launcher: Literal["torchrun", "accelerate"] = "torchrun"
    accelerate_config: str | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        if self.accelerate_config and self.launcher != "accelerate":
            raise ValueError("accelerate_config needs launcher: accelerate")
        return self

    @property
    def world_size(self) -> int:
        return self.processes * self.nnodes


class TrainSettings(_Strict):
    """The engine's settings (:func:`llm_finetune.training.engine.fit`); defaults are the sft defaults."""

    method: Literal["lora", "qlora", "full", "freeze"] = "lora"  # qlora: LoRA on a 4-bit NF4 base (CUDA)
    seed: int = 123
    # auto: bf16 where the CPU / GPU runs it natively, else fp16 with loss scaling on a GPU, else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    attention: str = "auto"  # auto | sdpa | eager | sdpa_fp32 (auto: fp32 attention in bf16 CPU training)
    epochs: float = Field(1, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs when set
    max_train_rows: int | None = Field(None, ge=1)  # the first N samples (pairs, blocks), before packing; None: all
    # rows (pairs for rm / dpo) per micro-batch; auto: the fastest under a memory cap, measured (auto_batch)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 8
    auto_batch: AutoBatchSettings = AutoBatchSettings()
    eval_batch_size: int | None = Field(None, ge=1)  # None: batch_size
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(1.0e-3, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: str = "cosine"  # any transformers scheduler name
    # steps of linear warmup; a float below 1 is a fraction of the training steps (transformers' convention,
    # LLaMA-Factory's warmup_ratio)
    warmup_steps: int | float = Field(10, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)  # 0: no clipping
    # any transformers `optim` name; fused AdamW: one kernel over all trainable tensors instead of torch's
    # per-tensor loop on CPU (3.3x faster steps over LoRA's 420 tensors: benchmarks/engine_step_ab.py);
    # transformers' own default on torch >= 2.8
    optimizer: str = "adamw_torch_fused"
    group_by_length: bool = True  # length-grouped batches (in random order) pad far less than random ones
    eval_steps: int = Field(40, ge=1)
    eval_before_training: bool = False  # also evaluate the untrained model (a val row at step 0)
    logging_steps: int = Field(5, ge=1)
    save_steps: int = Field(40, ge=0)  # a checkpoint every N steps (0: none)
    resume: bool = False  # continue an interrupted run from its last checkpoint
    keep_checkpoints: bool = False  # False: remove the checkpoints once training finished
    gradient_checkpointing: bool = False
    # torch.compile the decoder layers for the training steps (training/compile.py): ~1.2x faster steps on CPU
    # after a compilation at the first step (~45 s on 2 cores, seconds from a warm cache); pays off on long runs
    compile: bool = False
    # under compile: the share of a layer's activations kept for the backward pass, the rest recomputed
    # (torch's activation_memory_budget; 0.5: 13-15 % lower training peak RSS, no slower steps measured on CPU)
    compile_memory_budget: float = Field(0.5, gt=0, le=1)
    neftune_noise_alpha: float | None = Field(None, gt=0)
    early_stopping: EarlyStoppingSettings | None = None
    lora: LoraSettings = LoraSettings()
    freeze: FreezeSettings = FreezeSettings()
    distributed: DistributedSettings | None = None  # None: train in the train node's own process
    trainer_args: dict = {}  # any other transformers TrainingArguments (fsdp, ddp_timeout, ...), checked

    @model_validator(mode="after")
    def _trainer_args_known(self):
        from dataclasses import fields

        from transformers import TrainingArguments

        known = {f.name for f in fields(TrainingArguments) if f.init}
        problems = []
        for key in self.trainer_args:
            if key in OWNED_TRAINER_ARGS:
                problems.append(f"trainer_args.{key} is set by {OWNED_TRAINER_ARGS[key]}")
            elif key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                problems.append(f"trainer_args.{key} is not a TrainingArguments field"
                                + (f"; did you mean {near[0]}?" if near else ""))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _attention_known(self):
        known = ("auto", "sdpa", "eager", "sdpa_fp32", "flash_attention_2", "flex_attention")
        if self.attention not in known:
            raise ValueError(f"attention {self.attention!r} is not one of {known}")
        return self

    @model_validator(mode="after")
    def _warmup_steps_or_fraction(self):
        if isinstance(self.warmup_steps, float) and self.warmup_steps >= 1 and not self.warmup_steps.is_integer():
            raise ValueError(f"warmup_steps {self.warmup_steps}: a whole number of steps, or a fraction below 1")
        return self

    @field_validator("batch_size", mode="before")
    @classmethod
    def _number_or_auto(cls, value):
        if value == "auto":
            return value
        if isinstance(value, bool) or not str(value).strip().isdigit() or int(str(value).strip()) < 1:
            raise ValueError("a whole number of rows >= 1, or auto")
        return int(str(value).strip())

    @model_validator(mode="after")
    def _auto_batch_consistent(self):
        if self.batch_size != "auto":
            if self.auto_batch != AutoBatchSettings():
                raise ValueError(f"auto_batch applies to batch_size: auto (batch_size is {self.batch_size})")
            return self
        if self.distributed is not None:
            raise ValueError("batch_size auto is measured in one process: with distributed, set a number (the "
                             "batch_size_chosen of a run without distributed, in its train_info and MLflow)")
        if self.auto_batch.rows_per_step and self.gradient_accumulation_steps != 1:
            raise ValueError("auto_batch.rows_per_step sets the accumulation steps (rows_per_step / micro-batch): "
                             "leave gradient_accumulation_steps at 1")
        return self

    @property
    def eval_rows_per_batch(self) -> int:
        return self.eval_batch_size or self.fixed_batch_size("eval_batch_size")

    def fixed_batch_size(self, why: str) -> int:
        """``batch_size`` where something before training needs the number (``why`` names it in the error)."""
        if self.batch_size == "auto":
            raise ValueError(f"batch_size auto is chosen when training starts, and {why} needs a number before: "
                             "set batch_size (or eval_batch_size) to a number")
        return self.batch_size

    def with_batch(self, batch_size: int, accumulation: int) -> TrainSettings:
        """These settings with the micro-batch an auto choice made (and its accumulation steps)."""
        return self.model_copy(update={"batch_size": batch_size, "gradient_accumulation_steps": accumulation})

    @property
    def world_size(self) -> int:
        return self.distributed.world_size if self.distributed else 1

    @property
    def global_batch_size(self) -> int:
        """Rows per micro-batch over all processes: what one process sees with ``batch_size`` x N."""
        return self.fixed_batch_size("the global batch") * self.world_size

    def as_params(self) -> dict:
        """Plain values, as saved in ``training_params.json`` and hashed into checkpoint keys."""
        return self.model_dump(mode="json")

    def capped(self, rows: list, where: str, unit: str = "rows") -> tuple[list, dict]:
        """The first ``max_train_rows`` of ``rows`` (samples or pairs, before any packing) and the record
        ``{max_train_rows, rows_available, rows_used}`` that goes to the stage's stats and MLflow.

        A cap that cuts is logged as a warning with "N of M", so a real run never loses data quietly.
        """
        used = list(rows[: self.max_train_rows]) if self.max_train_rows else list(rows)
        if len(used) < len(rows):
            logger.warning("%s.max_train_rows = %d: training on %d of %d %s (null: all)", where,
                           self.max_train_rows, len(used), len(rows), unit)
        else:
            logger.info("Training on all %d %s (%s.max_train_rows: %s)", len(rows), unit, where, self.max_train_rows)
        return used, {"max_train_rows": self.max_train_rows, "rows_available": len(rows), "rows_used": len(used)}


def caps_in_effect(settings: TrainSettings, where: str, dataset_plan: list[dict], limits: dict) -> dict:
    """Every setting of this run that leaves data out, with its value: per-dataset ``max_rows``,
    ``<where>.max_train_rows`` / ``max_steps`` and ``limits`` (``tokenize.cutoff_len``, evaluation caps;
    unset ones are left out). Logged as a warning by preflight, before anything is read; the node that
    applies each cap then logs and records "N of M" (align, tokenize and training stats, in MLflow)."""
    caps = {f"data.{d['name']}.max_rows": d["max_rows"] for d in dataset_plan if d.get("max_rows")}
    caps |= {f"{where}.{name}": getattr(settings, name) for name in ("max_train_rows", "max_steps")
             if getattr(settings, name)}
    caps |= {name: value for name, value in limits.items() if value}
    if caps:
        logger.warning("Caps in effect (each can leave data out; set it to null to lift it): %s",
                       ", ".join(f"{name}={value}" for name, value in caps.items()))
    return caps


def train_settings(params: dict | None, where: str = "train") -> TrainSettings:
    """:class:`TrainSettings` from a stage's parameters; errors name ``where.<key>``."""
    params = dict(params or {})
    try:
        settings = TrainSettings(**params)
    except ValidationError as error:
        raise ValueError(_explain(error, where)) from None
    if settings.attention == "flash_attention_2":
        _check_flash_attention(settings, where)
    if settings.trainer_args.get("deepspeed"):
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ValueError(f"{where}.trainer_args.deepspeed needs the deepspeed package (pip install deepspeed), "
                             "on the machines that train")
    if settings.compile:
        _check_compile(settings, where)
    if settings.method == "qlora":
        from llm_finetune.models.tuning import qlora_problems

        problems = qlora_problems()
        if problems:
            raise ValueError(f"{where}.method qlora trains LoRA on a 4-bit base and needs CUDA and bitsandbytes: "
                             + "; ".join(problems) + f". Use {where}.method: lora on this machine.")
    return settings


def _check_compile(settings: TrainSettings, where: str) -> None:
    import torch

    from llm_finetune.training.compile import compile_problems

    if settings.gradient_checkpointing:  # transformers' checkpointed layers: Dynamo breaks the graph, runs eager
        raise ValueError(f"{where}.compile with {where}.gradient_checkpointing: the checkpointed decoder layers "
                         "cannot be compiled (torch.compile falls back to eager for each of them); set one of the two "
                         "to false")

    problems = compile_problems("cuda" if torch.cuda.is_available() else "cpu")
    if problems:
        raise ValueError(f"{where}.compile: torch.compile needs {' and '.join(problems)}; or set "
                         f"{where}.compile: false")


def _check_flash_attention(settings: TrainSettings, where: str) -> None:
    """FlashAttention-2 runs in fp16 / bf16 on CUDA with the flash-attn package; sft and pt batches are then
    flattened into one row (:class:`llm_finetune.tokens.packing.FlatteningCollator`) so packed samples keep
    their boundaries."""
    import importlib.util

    import torch

    if settings.precision == "fp32":
        raise ValueError(f"{where}.attention flash_attention_2 computes in fp16 / bf16 only, and {where}.precision is "
                         f"fp32: set {where}.precision: auto (or bf16), or {where}.attention: sdpa")
    missing = [what for what, absent in (("a CUDA device", not torch.cuda.is_available()),
                                         ("the flash-attn package", importlib.util.find_spec("flash_attn") is None))
               if absent]
    if missing:
        raise ValueError(f"{where}.attention flash_attention_2 needs {' and '.join(missing)}; use {where}.attention: "
                         "auto (sdpa, with packed samples kept apart by a block mask)")


def _explain(error: ValidationError, where: str) -> str:
    lines = []
    for problem in error.errors():
        path = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            known = _known_keys(problem["loc"][:-1])
            near = difflib.get_close_matches(str(problem["loc"][-1]), known, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; known keys: {', '.join(known)}"
            lines.append(f"{where}.{path}: unknown key{hint}")
        else:
            lines.append(f"{where}.{path}: {problem['msg']} (got {problem.get('input')!r})" if path else
                         f"{where}: {problem['msg']}")
    return "invalid training settings:\n  " + "\n  ".join(lines)


def _known_keys(location: tuple) -> list[str]:
    model: type[BaseModel] = TrainSettings
    for part in location:
        annotation = model.model_fields[str(part)].annotation
        model = next((a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
                      and issubclass(a, BaseModel)), model)
    return sorted(model.model_fields)
