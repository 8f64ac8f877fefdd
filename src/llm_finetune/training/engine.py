"""The one training engine: :func:`fit` trains any objective (sft, pt, dpo, reward, ...) the same way.

The recipe reads top to bottom: resolve precision and seed -> the objective builds its model ->
training attention -> the decoder layers compiled (``compile: true``: :mod:`llm_finetune.training.compile`)
-> the micro-batch (measured under ``batch_size: auto``:
:mod:`llm_finetune.training.auto_batch`) -> fit (seeded length-grouped batches, accumulation, clipping, evaluation,
early stopping, checkpoints with exact resume, throughput / MFU, MLflow steps) -> the model, its
loss history and a ``train_info`` record.

Why one transformers ``Trainer`` subclass rather than a loop of our own: the Trainer already
owns what must not drift between stages and is hard to get right — optimiser and scheduler
names users know, gradient accumulation, checkpoints holding optimiser / scheduler / RNG /
callback state with exact resume (mid-epoch included), NEFTune, gradient checkpointing, and the
accelerate / DDP / FSDP / DeepSpeed paths scale-out builds on. :class:`ObjectiveTrainer` replaces
only what is the objective's (model, batches, loss, per-example metrics) and our data order.

Speed on CPU (``benchmarks/train_vs_peers.py`` has the figures against TRL, the book's loop and the
Trainer's defaults), each step exact or numerically equivalent:

* with LoRA in bf16 the frozen base weights are bf16 and the LoRA weights fp32 under bf16 autocast,
  with peft's fp32 input casts off (:func:`llm_finetune.training.numerics.compute_context`);
* the loss is computed on the trained positions only (:mod:`llm_finetune.training.numerics`);
* batches carry no attention mask (right padding cannot reach a real token), and attention runs
  in fp32 inside bf16 training on CPU (:mod:`llm_finetune.training.attention`).

Under gradient accumulation a token-level objective divides its summed loss by the trained tokens
of all micro-batches (``num_items_in_batch``); a per-example mean (DPO, reward) is divided by the
accumulation steps by the Trainer.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer

from llm_finetune.models.precision import compute_context, resolve_precision
from llm_finetune.models.tuning import half_dtype
from llm_finetune.training.attention import set_attention, use_training_attention
from llm_finetune.training.auto_batch import choose_batch_size
from llm_finetune.training.batching import RepeatedBatches, SeededShuffle, ShuffledLengthGroupedSampler
from llm_finetune.training.callbacks import (
    EarlyStopping,
    LoggedRowsInCheckpoints,
    MlflowSteps,
    Throughput,
    loss_history,
    peak_gemm_flops,
)
from llm_finetune.training.compile import compiled_layers, eager
from llm_finetune.training.objectives import Objective
from llm_finetune.training.parallel import summed_over_ranks, through_wrapper, unwrap
from llm_finetune.training.settings import TrainSettings

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model, its per-step history and the ``train_info`` record."""

    model: object
    history: list[dict]
    info: dict
    trained_state: dict | None = None  # under N processes: the trainable weights, gathered (FSDP / DeepSpeed)
    logged_rows: list[dict] = field(default_factory=list)  # the objective's (GRPO: sampled completions)


class _Rows(torch.utils.data.Dataset):
    """A list of rows as a map-style dataset (the objective picks the fields a batch needs)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


def fit(objective: Objective, train_rows: list[dict], val_rows: list[dict], settings: TrainSettings,
        checkpoint_dir: Path | None = None, callbacks=(), settings_key: str = "train") -> FitResult:
    """Train ``objective`` on ``train_rows`` with ``settings``, evaluating on ``val_rows``.

    With ``checkpoint_dir``, a checkpoint (weights, optimiser, scheduler, RNG states, early-stopping
    state, step) is written every ``save_steps`` steps; ``resume: true`` continues from the last one
    there, with the same data order, so the result equals an uninterrupted run. The folder is
    removed after a successful run unless ``keep_checkpoints``. ``settings_key``: where the settings
    live in the parameters (``rm.train``), the prefix of their MLflow parameters.

    With ``settings.distributed`` the caller stays the driver: the engine runs in processes started
    by ``torchrun`` / ``accelerate launch`` (:mod:`llm_finetune.training.distributed`) and the trained
    weights come back into a model built here; otherwise it runs in this process.
    """
    if not train_rows or not val_rows:
        raise ValueError(f"{objective.name} needs train and val rows, got {len(train_rows)} and {len(val_rows)}")
    if settings.distributed is None:
        return fit_in_process(objective, train_rows, val_rows, settings, checkpoint_dir, callbacks, settings_key)
    if callbacks:
        raise ValueError("extra callbacks cannot cross into launched processes; train without train.distributed")
    from llm_finetune.training.distributed import cleanup, launch

    launched = launch(objective, train_rows, val_rows, settings, checkpoint_dir, settings_key)
    model, _, _ = objective.build_model(settings, resolve_precision(settings.precision))
    launched.load_into(model)
    cleanup(launched)
    return FitResult(model=model, history=launched.history, info=launched.info, logged_rows=launched.logged_rows)


def fit_in_process(objective: Objective, train_rows: list[dict], val_rows: list[dict], settings: TrainSettings,
                   checkpoint_dir: Path | None = None, callbacks=(), settings_key: str = "train",
                   mlflow_run: dict | None = None, clean_up: bool = True) -> FitResult:
    """:func:`fit` in this process: one device, or one rank of a launched run (``mlflow_run``: the
    driver's ``{tracking_uri, run_id}``, which rank 0 logs its steps into; ``clean_up=False``: the
    driver removes the checkpoints once every rank is done)."""
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    precision = resolve_precision(settings.precision)
    set_seed(settings.seed)
    model, trainable, total = objective.build_model(settings, precision)
    trainable_names = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    rows, logged_settings, choice = [objective.row(r) for r in train_rows], settings.as_params(), None
    eval_rows = [objective.row(r) for r in val_rows]
    attention, model_attention = use_training_attention(model, settings.attention, precision, settings.compile,
                                                        objective.longest_sequence(rows + eval_rows))
    with (compiled_layers(model, settings.compile, settings_key, settings.compile_memory_budget) as compiled,
          tempfile.TemporaryDirectory(prefix="llm-finetune-trainer-") as scratch):
        # auto measures inside the block: the speed of the (compiled) layers the run will have
        if settings.batch_size == "auto":
            if getattr(objective, "sequential", False) or objective.batch_repeats > 1:
                raise ValueError(f"{settings_key}.batch_size auto: {objective.name} batches are fixed by the method")
            choice = choose_batch_size(model, objective, rows, settings, precision, settings_key, checkpoint_dir)
            settings = settings.with_batch(choice["batch_size"], choice["gradient_accumulation_steps"])
            logged_settings |= {"batch_size_chosen": settings.batch_size,
                                "gradient_accumulation_steps_chosen": settings.gradient_accumulation_steps}
        throughput = Throughput(objective.flops_per_token(total, settings),
                                peak_gemm_flops(half_dtype(precision), device=next(model.parameters()).device))
        stopping = [EarlyStopping(**settings.early_stopping.model_dump())] if settings.early_stopping else []
        output_dir = Path(checkpoint_dir) if checkpoint_dir else Path(scratch)
        output_dir.mkdir(parents=True, exist_ok=True)
        last = get_last_checkpoint(str(output_dir)) if settings.resume and checkpoint_dir else None
        arguments = training_arguments(settings, precision, output_dir, checkpoint_dir is not None)
        # the untrained model's val row: evaluated by the Trainer once the model is wrapped (an evaluate()
        # before train() would leave DDP unwrapped), and restored from the checkpoint on resume
        arguments.eval_on_start = settings.eval_before_training and last is None
        trainer = ObjectiveTrainer(
            model=model, args=arguments,
            train_dataset=_Rows(rows),
            eval_dataset=_Rows(eval_rows), data_collator=objective.collate,
            callbacks=[throughput, *stopping, LoggedRowsInCheckpoints(objective), *callbacks,
                       MlflowSteps(objective.metric_names, {settings_key: logged_settings}, **(mlflow_run or {}))],
            objective=objective, length_grouped=settings.group_by_length)
        if trainer.args.n_gpu > 1:
            raise RuntimeError(f"{trainer.args.n_gpu} GPUs are visible to one process: set "
                               f"{settings_key}.distributed.processes={trainer.args.n_gpu} to train on all of them "
                               "(or CUDA_VISIBLE_DEVICES=0 for one)")
        if last:
            logger.info("Resuming training from %s", last)
            LoggedRowsInCheckpoints.restore(objective, last)
        elif settings.resume:
            logger.info("train.resume is set but %s holds no checkpoint: starting from step 0", output_dir)
        with compute_context(model, precision, autocast=False):  # the Trainer autocasts in compute_loss
            result = trainer.train(resume_from_checkpoint=last)
            if trainer.state.global_step % settings.eval_steps:
                trainer.evaluate()
        trained_state = None
        if trainer.args.world_size > 1:  # a collective: every rank takes part, rank 0 gets the full weights
            state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
            trained_state = {name: state[name] for name in trainable_names if state and name in state}
    if attention != model_attention:
        set_attention(model, model_attention)
    if checkpoint_dir and clean_up and not settings.keep_checkpoints:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    history = loss_history(trainer.state.log_history, objective.metric_names)
    runtime = result.metrics["train_runtime"]
    info = {"objective": objective.name, "method": settings.method, "precision": precision, "attention": attention,
            "trainable_parameters": trainable, "total_parameters": total, "train_runtime_s": round(runtime, 1),
            "global_steps": trainer.state.global_step, "world_size": trainer.args.world_size,
            "train_rows": len(train_rows), "val_rows": len(val_rows), "batch_size": settings.batch_size,
            "compiled_layers": compiled,
            "gradient_accumulation_steps": settings.gradient_accumulation_steps, "auto_batch": choice,
            "input_tokens_per_s": round(trainer.state.num_input_tokens_seen / runtime, 1) if runtime else None,
            "peak_gemm_tflops": round(throughput.peak_flops / 1e12, 3), "mean_mfu": throughput.mean_mfu(),
            "stopped_early": trainer.state.global_step < trainer.state.max_steps,
            "resumed_from": Path(last).name if last else None,
            "final_train_loss": round(result.training_loss, 6),
            "final_val_loss": round(next(r["loss"] for r in reversed(history) if r["split"] == "val"), 6)}
    return FitResult(model=model, history=history, info=info | objective.summary(history, train_rows),
                     trained_state=trained_state, logged_rows=objective.logged_rows())


def training_arguments(settings: TrainSettings, precision: str, output_dir: Path, checkpointing: bool):
    """transformers ``TrainingArguments`` from the settings, then ``settings.trainer_args`` on top
    (checked against ``TrainingArguments`` in preflight: :func:`llm_finetune.training.settings.train_settings`)."""
    from transformers import TrainingArguments

    arguments = dict(
        output_dir=str(output_dir), seed=settings.seed, data_seed=settings.seed,
        num_train_epochs=settings.epochs, max_steps=settings.max_steps or -1,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.eval_rows_per_batch,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate, weight_decay=settings.weight_decay,
        lr_scheduler_type=settings.lr_scheduler, warmup_steps=settings.warmup_steps,
        max_grad_norm=settings.max_grad_norm, bf16=precision == "bf16", fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="random",  # length grouping: our sampler (ObjectiveTrainer)
        eval_strategy="steps", eval_steps=settings.eval_steps, logging_steps=settings.logging_steps,
        save_strategy="steps" if checkpointing and settings.save_steps else "no",
        save_steps=settings.save_steps or 500, save_total_limit=2, restore_callback_states_from_checkpoint=True,
        report_to="none", dataloader_num_workers=0, disable_tqdm=False, remove_unused_columns=False,
        optim=settings.optimizer, neftune_noise_alpha=settings.neftune_noise_alpha,
        gradient_checkpointing=settings.gradient_checkpointing, include_num_input_tokens_seen="all",
        prediction_loss_only=True,
        # under N processes: trained tokens counted over all ranks (ObjectiveTrainer.compute_loss), every
        # trainable parameter takes part in every step (no unused-parameter search), gloo on CPU
        average_tokens_across_devices=True, ddp_find_unused_parameters=False,
        ddp_backend="gloo" if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    return TrainingArguments(**arguments | settings.trainer_args)


class ObjectiveTrainer(Trainer):
    """``Trainer`` whose loss, batches and metrics are the objective's, with our length-grouped sampler.

    Per-example metrics returned by the objective's loss are summed and averaged per example into
    each train / eval log (``<name>`` / ``eval_<name>``); a metric no example had in a window (KTO's
    ``rewards/rejected`` in an all-desirable window) is left out of that log. An objective with
    ``sequential = True`` is read in row order (its batches are fixed by the data).
    """

    def __init__(self, *args, objective: Objective, length_grouped: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective, self.length_grouped = objective, length_grouped
        self.loss_is_scaled_for_ga = objective.scaled_for_accumulation(self.model)
        self.metric_sums: dict[str, dict[str, tuple[float, int]]] = {"train": {}, "eval": {}}

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if getattr(self.objective, "sequential", False):  # batches fixed by the data (KTO's KL partners)
            sampler = SequentialSampler(dataset)
        elif self.length_grouped:
            # grouped by the rows of an optimiser step: its micro-batches, and the ranks' per-device slices of
            # each (accelerate's batch sharding), are consecutive; so N processes, or micro-batches of B/k with k
            # accumulation steps, train on the steps of one process with micro-batches of B
            sampler = ShuffledLengthGroupedSampler([self.objective.length(row) for row in dataset.rows],
                                                   self.args.per_device_train_batch_size * self.args.world_size
                                                   * self.args.gradient_accumulation_steps, self.args.data_seed)
        elif self.objective.batch_repeats == 1:
            return super()._get_train_sampler(train_dataset)
        else:  # wrapped below: its order must be seeded here, not by the global RNG
            sampler = SeededShuffle(len(dataset), self.args.data_seed)
        if self.objective.batch_repeats > 1:  # one optimiser step's rows, trained on repeats steps in a row
            step_rows = (self.args.per_device_train_batch_size * self.args.world_size
                         * self.args.gradient_accumulation_steps)
            sampler = RepeatedBatches(sampler, step_rows, self.objective.batch_repeats)
        return sampler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The objective's loss, run as the forward of the (possibly wrapped) model.

        A token-level loss is divided by the trained tokens of all ranks (``num_items_in_batch`` is
        gathered by the Trainer); DDP then averages the gradients over the ranks, so the loss is
        multiplied by their number to make the step one process's step on the global batch.
        """
        inputs = self.objective.prepare(unwrap(model), inputs, self.state.global_step)

        def objective_loss(inner):
            with self.accelerator.autocast():  # the Trainer's autocast wraps model.forward, which objectives bypass
                return self.objective.loss(inner, inputs, num_items_in_batch)

        loss, metrics = through_wrapper(model, objective_loss)
        if (model.training and self.loss_is_scaled_for_ga and num_items_in_batch is not None
                and self.args.average_tokens_across_devices):
            loss = loss * self.accelerator.num_processes
        sums = self.metric_sums["train" if model.training else "eval"]
        for name, values in metrics.items():
            total, count = sums.get(name, (0.0, 0))
            sums[name] = (total + values.sum().item(), count + len(values))
        return (loss, {"loss": loss}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The objective's loss on an eval batch (objectives need no labels to have a loss), eager under
        ``train.compile`` (a graph without gradients would be a second compilation for a few batches)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager(), eager():
            loss = self.compute_loss(model, inputs)
        return loss.detach().mean(), None, None

    def log(self, logs: dict, start_time: float | None = None) -> None:
        mode, prefix = ("eval", "eval_") if "eval_loss" in logs else ("train", "") if "loss" in logs else (None, "")
        if mode:
            sums = summed_over_ranks(self.metric_sums[mode], self.objective.metric_names)  # every rank logs
            logs |= {f"{prefix}{name}": round(total / count, 6) for name, (total, count) in sums.items() if count}
            self.metric_sums[mode] = {}
        super().log(logs, start_time)
