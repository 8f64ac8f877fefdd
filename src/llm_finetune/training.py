"""Supervised fine-tuning (LoRA, full or freeze) through transformers' ``Trainer``.

The recipe reads top to bottom: resolve precision -> prepare the model (which weights train,
:mod:`llm_finetune.tuning_methods`) -> fit with validation loss, checkpoints, throughput / MFU
and optional early stopping -> return the model and its loss history.

Speed on CPU (``benchmarks/train_vs_peers.py`` has the figures against TRL, the book's loop
and the Trainer's defaults), each step exact or numerically equivalent:

* with LoRA in bf16 the frozen base weights are stored in bf16 and the LoRA weights (the only
  ones the optimiser updates) in fp32, under bf16 autocast, with peft's fp32 input casts off
  (autocast would cast straight back);
* the loss is computed on the trained positions only (:mod:`llm_finetune.causal_loss`);
* training batches carry no attention mask (right padding cannot reach a real token), and
  attention runs in fp32 inside bf16 training (:mod:`llm_finetune.attention`).

Under gradient accumulation the loss is the summed token loss divided by the trained tokens of
all micro-batches (``num_items_in_batch``), which ``tests/test_training_accumulation.py`` pins.
Padding uses our own collator (:class:`llm_finetune.packing.PadCollator`): labels are padded
with ``-100`` by position, never by comparing with the pad id (pad == EOS in SmolLM2, and EOS
must stay a target); packed rows keep their per-sample position ids.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from llm_finetune.attention import set_attention, use_training_attention
from llm_finetune.causal_loss import supports_trained_token_loss, trained_token_loss
from llm_finetune.models.loading import load_tokenizer, resolve_precision
from llm_finetune.packing import PadCollator
from llm_finetune.sampling import ShuffledLengthGroupedSampler
from llm_finetune.tuning_methods import prepare_model

logger = logging.getLogger(__name__)


class _TokenRows(torch.utils.data.Dataset):
    """Rows as the Trainer wants them (``input_ids``, ``labels``, and ``position_ids`` when packed)."""

    def __init__(self, rows: list[dict]):
        keys = ("input_ids", "labels", "position_ids")
        self.rows = [{k: r[k] for k in keys if r.get(k) is not None} for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


def train_model(train_rows: list[dict], val_rows: list[dict], base_model: Path, params: dict, callbacks=(),
               checkpoint_dir: Path | None = None):
    """Fine-tune ``base_model`` (``train.method``: lora | full | freeze); returns ``(model, tokenizer, history, info)``.

    With ``checkpoint_dir``, a checkpoint (adapter, optimizer, scheduler, RNG states, step) is
    written every ``save_steps`` steps; ``resume: true`` continues from the last one there, with
    the same data order, so the result equals an uninterrupted run. The folder is removed after
    a successful run unless ``keep_checkpoints``.
    """
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    precision = resolve_precision(params["precision"])
    set_seed(params["seed"])
    tokenizer = load_tokenizer(base_model)
    model, trainable, total = prepare_model(base_model, params, precision)
    attention, model_attention = use_training_attention(model, params.get("attention", "auto"), precision)
    throughput = Throughput(flops_per_token=(6 if params.get("method", "lora") == "full" else 4) * total,
                            peak_flops=peak_gemm_flops(torch.bfloat16 if precision == "bf16" else torch.float32))
    extra = [throughput] + ([EarlyStopping(**params["early_stopping"])] if params.get("early_stopping") else [])
    with tempfile.TemporaryDirectory(prefix="llm-finetune-trainer-") as scratch:
        output_dir = Path(checkpoint_dir) if checkpoint_dir else Path(scratch)
        output_dir.mkdir(parents=True, exist_ok=True)
        trainer = _trainer_class()(
            model=model, args=training_arguments(params, precision, output_dir, checkpoint_dir),
            train_dataset=_TokenRows(train_rows), eval_dataset=_TokenRows(val_rows),
            data_collator=PadCollator(tokenizer.pad_token_id, attention_mask=False), callbacks=extra + list(callbacks),
            length_grouped=bool(params["group_by_length"]))
        last = get_last_checkpoint(str(output_dir)) if params.get("resume") and checkpoint_dir else None
        if last:
            logger.info("Resuming training from %s", last)
        elif params.get("resume"):
            logger.info("train.resume is set but %s holds no checkpoint: starting from step 0", output_dir)
        with _autocast_feeds_lora(model, precision):
            result = trainer.train(resume_from_checkpoint=last)
            if trainer.state.global_step % params["eval_steps"]:
                trainer.evaluate()
    if attention != model_attention:
        set_attention(model, model_attention)
    if checkpoint_dir and not params.get("keep_checkpoints"):
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    history = _loss_history(trainer.state.log_history)
    runtime = result.metrics["train_runtime"]
    trained_tokens = sum(sum(label != -100 for label in row["labels"][1:]) for row in train_rows)
    info = {"method": params.get("method", "lora"), "precision": precision, "attention": attention,
            "trainable_parameters": trainable,
            "total_parameters": total, "train_runtime_s": round(runtime, 1), "global_steps": trainer.state.global_step,
            "input_tokens_per_s": round(trainer.state.num_input_tokens_seen / runtime, 1) if runtime else None,
            "peak_gemm_tflops": round(throughput.peak_flops / 1e12, 3), "mean_mfu": throughput.mean_mfu(),
            "stopped_early": trainer.state.global_step < trainer.state.max_steps,
            "trained_tokens_per_epoch": trained_tokens,
            "resumed_from": Path(last).name if last else None, "final_train_loss": round(result.training_loss, 4),
            "final_val_loss": round(next(r["loss"] for r in reversed(history) if r["split"] == "val"), 4)}
    return model, tokenizer, history, info


def _autocast_feeds_lora(model, precision: str):
    """Under bf16 autocast, let LoRA layers take their bf16 input as is.

    peft casts each LoRA input to the fp32 adapter dtype, and autocast casts it straight back
    to bf16 for the matmul: two copies per adapted layer and step, for the same numbers.
    """
    from contextlib import nullcontext

    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model) if precision == "bf16" and hasattr(model, "peft_config") else nullcontext()


def _trainer_class():
    """transformers ``Trainer`` computing the loss on trained positions only, where the model allows it."""
    from transformers import Trainer

    class TrainedTokenTrainer(Trainer):
        def __init__(self, *args, length_grouped: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.length_grouped = length_grouped
            self.gathered_loss = supports_trained_token_loss(self.model)
            if self.gathered_loss:  # divided by the trained tokens of the whole accumulated batch
                self.loss_is_scaled_for_ga = True
            else:
                logger.info("%s computes its own loss over every position", type(self.model).__name__)

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if not self.length_grouped:
                return super()._get_train_sampler(train_dataset)
            return ShuffledLengthGroupedSampler([len(row["input_ids"]) for row in dataset.rows],
                                                self.args.per_device_train_batch_size, self.args.data_seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self.gathered_loss:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training and num_items_in_batch is None:
                raise RuntimeError("training needs the trained-token count of the accumulated batch")
            with self.accelerator.autocast():  # the Trainer's autocast wraps model.forward, not used here
                loss = trained_token_loss(model, inputs, num_items_in_batch)
            return (loss, {"loss": loss}) if return_outputs else loss

    return TrainedTokenTrainer


def training_arguments(params: dict, precision: str, output_dir: Path, checkpointing: bool):
    """transformers ``TrainingArguments`` from the ``train`` parameters."""
    from transformers import TrainingArguments

    save_steps = params.get("save_steps") or 0
    return TrainingArguments(
        output_dir=str(output_dir), seed=params["seed"], data_seed=params["seed"],
        num_train_epochs=params["epochs"], max_steps=params.get("max_steps") or -1,
        per_device_train_batch_size=params["batch_size"], per_device_eval_batch_size=params["batch_size"],
        gradient_accumulation_steps=params["gradient_accumulation_steps"],
        learning_rate=params["learning_rate"], weight_decay=params["weight_decay"],
        lr_scheduler_type=params["lr_scheduler"], warmup_steps=params["warmup_steps"],
        max_grad_norm=params["max_grad_norm"], bf16=precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="random",  # length grouping: our sampler (TrainedTokenTrainer)
        eval_strategy="steps", eval_steps=params["eval_steps"], logging_steps=params["logging_steps"],
        save_strategy="steps" if checkpointing and save_steps else "no", save_steps=save_steps or 500,
        save_total_limit=2, report_to="none", dataloader_num_workers=0, disable_tqdm=False,
        optim=params.get("optimizer", "adamw_torch"), neftune_noise_alpha=params.get("neftune_noise_alpha"),
        gradient_checkpointing=bool(params.get("gradient_checkpointing")), include_num_input_tokens_seen="all",
        prediction_loss_only=True,
    )


def peak_gemm_flops(dtype: torch.dtype, size: int = 1024, seconds: float = 0.3, rounds: int = 3) -> float:
    """Measured GEMM FLOP/s of this machine in ``dtype`` (the peak MFU is taken against).

    The best of ``rounds`` timed rounds, so a moment of load from another process does not
    lower the peak (and inflate MFU).
    """
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(rounds):
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            torch.mm(a, b)
            runs += 1
        best = max(best, 2 * size**3 * runs / (time.perf_counter() - started))
    return best


class Throughput(TrainerCallback):
    """Adds ``tokens_per_s`` and ``mfu`` (against the measured GEMM peak) to each training log."""

    def __init__(self, flops_per_token: float, peak_flops: float):
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.last = (time.perf_counter(), 0)
        self.mfus: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:  # evaluation logs: not a training interval
            return
        now = (time.perf_counter(), state.num_input_tokens_seen)
        if now[0] > self.last[0]:
            rate = (now[1] - self.last[1]) / (now[0] - self.last[0])
            logs["tokens_per_s"] = round(rate, 1)
            logs["mfu"] = round(rate * self.flops_per_token / self.peak_flops, 4)
            self.mfus.append(logs["mfu"])
            remaining = (state.max_steps - state.global_step) * (now[0] - self.last[0]) / max(args.logging_steps, 1)
            logger.info("step %d/%d: loss %.4f, %.0f tokens/s, MFU %.1f%%, ETA %.0f s", state.global_step,
                        state.max_steps, logs["loss"], rate, 100 * logs["mfu"], remaining)
        self.last = now

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = (time.perf_counter(), state.num_input_tokens_seen)

    def mean_mfu(self) -> float | None:
        return round(sum(self.mfus) / len(self.mfus), 4) if self.mfus else None


class EarlyStopping(TrainerCallback):
    """Stop when val loss has not improved by ``min_delta`` for ``patience`` evaluations."""

    def __init__(self, patience: int = 3, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = float("inf"), 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if loss < self.best - self.min_delta:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                logger.info("Early stopping at step %d: val loss %.4f, best %.4f", state.global_step, loss, self.best)
                control.should_training_stop = True


def _loss_history(log_history: list[dict]) -> list[dict]:
    """Per-step train and validation loss from the Trainer's log."""
    rows = []
    for entry in log_history:
        if "loss" in entry:
            rows.append({"step": entry["step"], "split": "train", "loss": entry["loss"],
                         "learning_rate": entry.get("learning_rate")})
        elif "eval_loss" in entry:
            rows.append({"step": entry["step"], "split": "val", "loss": entry["eval_loss"]})
    return rows
