"""Pairwise reward model: a one-output sequence classifier on the base model, LoRA + a trained score head.

The recipe reads top to bottom: prepare / load the model -> batch pairs -> read rewards -> pairwise
loss -> evaluate -> fit (seeded loop). Scoring new responses with a saved reward model (the judge
step, ``score``) is in :mod:`llm_finetune.judging.reward_judge`.

* **Model.** ``AutoModelForSequenceClassification`` with ``num_labels=1`` and ``pad_token_id`` in
  its config; LoRA (peft task ``SEQ_CLS``) on ``lora.target_modules`` with the ``score`` head in
  ``modules_to_save``, so the head trains in full. Base weights load in fp32 and, in bf16, the
  frozen ones are cast down after the head is created: the head's seeded initialisation and
  the trained weights (LoRA + head, fp32) are the same in both precisions.
* **Reward index.** A sequence's reward is the score head on the decoder's hidden state at its
  last real token, ``length - 1``, with the length taken from the row. Never by searching pad
  ids: SmolLM2's pad token *is* its EOS, every answer ends with EOS, and transformers' own
  pooling ("last token that is not pad") then reads the token before the EOS, or a pad's
  position when the answer holds an EOS id. Training, validation, test and judging all call
  :func:`sequence_rewards`, so padding and EOS are handled identically everywhere.
* **Batches.** Chosen and rejected sequences of the same pairs go through one forward pass,
  right-padded to one width (chosen first, then rejected). No attention mask: in a causal model
  right padding never reaches a real token, so a reward does not depend on its batch.
* **Loss.** ``-log sigmoid(r_chosen - r_rejected - margin)``, the mean over pairs.
* **Training loop.** A plain seeded loop (AdamW, transformers' LR schedulers, gradient clipping,
  bf16 autocast, length-grouped batches) rather than transformers' ``Trainer``: the Trainer's
  collation, loss and evaluation loop assume one sequence per example with labels, and a pair
  batch would need overrides of ``compute_loss``, ``prediction_step`` and column removal, more
  code than the loop, and its evaluation would not report pairwise accuracy. Per-step train and
  validation metrics go to the active MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from llm_finetune.attention import set_attention, use_training_attention
from llm_finetune.models.loading import device, load_tokenizer, resolve_precision
from llm_finetune.sampling import ShuffledLengthGroupedSampler
from llm_finetune.tuning_methods import lora_config

logger = logging.getLogger(__name__)
REWARD_FILE = "reward_model.json"
REQUIRED_TRAIN_KEYS = ("seed", "precision", "epochs", "batch_size", "learning_rate", "lora")


# ---- model ----

def reward_lora_config(lora_params: dict):
    """peft ``LoraConfig`` for a sequence classifier: the ``score`` head trains in full."""
    return replace(lora_config(lora_params), task_type="SEQ_CLS", modules_to_save=["score"])


def _classifier(folder: Path, pad_token_id: int):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, pad_token_id=pad_token_id,
                                                               dtype=torch.float32)
    model.config.pad_token_id = pad_token_id
    model.config.use_cache = False
    if not hasattr(model, "score"):
        raise ValueError(f"{folder}: {type(model).__name__} has no `score` head; reward models need a decoder "
                         "architecture whose sequence classifier is `score` (Llama, Mistral, Qwen, Gemma, ...)")
    return model


def _frozen_to(model, precision: str):
    """Base weights in bf16 under ``precision: bf16``; LoRA and trained-head weights stay fp32 (as trained)."""
    if precision == "bf16":
        for name, parameter in model.named_parameters():
            if "lora_" not in name and "modules_to_save" not in name:
                parameter.data = parameter.data.to(torch.bfloat16)
    return model.to(device())


def prepare_reward_model(base_model: Path, lora_params: dict, precision: str, pad_token_id: int, seed: int):
    """The untrained reward model (seeded head, zero LoRA update); returns ``(model, trainable, total)``."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(_classifier(base_model, pad_token_id), reward_lora_config(lora_params))
    model = _frozen_to(model, precision)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("Reward model: %d trainable of %d parameters (%.2f%%), precision %s", trainable, total,
                100 * trainable / total, precision)
    return model, trainable, total


def load_reward_model(folder: Path, precision: str = "fp32", base_model: Path | None = None):
    """A saved reward model: our LoRA folder (base from ``base_model`` or ``reward_model.json``) or a full one.

    A folder without ``adapter_config.json`` is loaded as a whole sequence classifier (any
    one-output reward model saved by transformers). Returns ``(model, tokenizer)``, in eval mode.
    """
    from peft import PeftModel

    folder = Path(folder)
    tokenizer = load_tokenizer(folder)
    if not (folder / "adapter_config.json").is_file():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} holds neither a LoRA reward model (adapter_config.json) nor a model "
                                    "(config.json)")
        _check_sequence_classifier(folder)
        return _frozen_to(_classifier(folder, tokenizer.pad_token_id), precision).eval(), tokenizer
    if base_model is None:
        record = folder / REWARD_FILE
        if not record.is_file():
            raise FileNotFoundError(f"{folder} lacks {REWARD_FILE}; pass the base model folder it was trained on")
        base_model = Path(json.loads(record.read_text())["base_model"])
    if not (Path(base_model) / "config.json").is_file():
        raise FileNotFoundError(f"Base model {base_model} of reward model {folder} holds no config.json")
    model = PeftModel.from_pretrained(_classifier(Path(base_model), tokenizer.pad_token_id), folder)
    return _frozen_to(model, precision).eval(), tokenizer


def _check_sequence_classifier(folder: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures) or config.num_labels != 1:
        raise ValueError(f"{folder} holds {architectures or 'a model'} with {config.num_labels} labels, not a reward "
                         "model (a sequence classifier with one output)")


@contextmanager
def compute_precision(model, precision: str):
    """bf16 autocast (peft's fp32 input casts off: autocast would cast straight back), or nothing."""
    with ExitStack() as stack:
        if precision == "bf16":
            from peft.helpers import disable_input_dtype_casting

            stack.enter_context(torch.autocast(device().type, dtype=torch.bfloat16))
            if hasattr(model, "peft_config"):
                stack.enter_context(disable_input_dtype_casting(model))
        yield


# ---- batches, rewards, loss ----

def pad_sequences(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and the true ``lengths`` (the reward index is ``length - 1``)."""
    if any(not ids for ids in sequences):
        raise ValueError("cannot score an empty sequence")
    width = max(len(ids) for ids in sequences)
    input_ids = torch.tensor([list(ids) + [pad_token_id] * (width - len(ids)) for ids in sequences])
    return input_ids, torch.tensor([len(ids) for ids in sequences])


@dataclass
class PairCollator:
    """Chosen then rejected sequences of ``rows`` in one right-padded batch, with their lengths."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict:
        sequences = [r["chosen_input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows]
        input_ids, lengths = pad_sequences(sequences, self.pad_token_id)
        return {"input_ids": input_ids, "lengths": lengths}


def sequence_rewards(model, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """fp32 reward of each row: the score head at position ``length - 1`` (see the module docstring)."""
    classifier = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(classifier, classifier.base_model_prefix)
    input_ids, lengths = input_ids.to(classifier.device), lengths.to(classifier.device)
    hidden = backbone(input_ids=input_ids, use_cache=False).last_hidden_state
    last = hidden[torch.arange(len(lengths), device=hidden.device), lengths - 1]
    return classifier.score(last).squeeze(-1).float()


def pair_rewards(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(chosen, rejected)`` rewards of a :class:`PairCollator` batch."""
    rewards = sequence_rewards(model, batch["input_ids"], batch["lengths"])
    half = len(rewards) // 2
    return rewards[:half], rewards[half:]


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean of ``-log sigmoid(r_chosen - r_rejected - margin)`` over pairs."""
    return -F.logsigmoid(chosen - rejected - margin).mean()


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> dict:
    """Pairwise accuracy (a tie counts as wrong), mean margin, mean rewards and the loss."""
    chosen, rejected = chosen.detach().float(), rejected.detach().float()
    return {"pairs": len(chosen), "accuracy": round((chosen > rejected).float().mean().item(), 4),
            "mean_margin": round((chosen - rejected).mean().item(), 4),
            "mean_chosen_reward": round(chosen.mean().item(), 4),
            "mean_rejected_reward": round(rejected.mean().item(), 4),
            "loss": round(pairwise_loss(chosen, rejected, margin).item(), 4)}


def pair_length(row: dict) -> int:
    return max(len(row["chosen_input_ids"]), len(row["rejected_input_ids"]))


@torch.no_grad()
def evaluate_pairs(model, pairs: list[dict], pad_token_id: int, precision: str, batch_size: int = 16,
                   margin: float = 0.0) -> dict:
    """:func:`pair_metrics` over ``pairs``, in batches of similar length."""
    if not pairs:
        raise ValueError("no preference pairs to evaluate")
    was_training = model.training
    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: pair_length(pairs[i]))
    chosen, rejected = torch.empty(len(pairs)), torch.empty(len(pairs))
    collate = PairCollator(pad_token_id)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        with compute_precision(model, precision):
            batch_chosen, batch_rejected = pair_rewards(model, collate([pairs[i] for i in indices]))
        chosen[indices], rejected[indices] = batch_chosen.cpu(), batch_rejected.cpu()
    model.train(was_training)
    return pair_metrics(chosen, rejected, margin)


@torch.no_grad()
def sequence_scores(model, sequences: list[list[int]], pad_token_id: int, precision: str,
                    batch_size: int = 8) -> list[float]:
    """Rewards of token sequences, in input order (batched by length; the index rule of training)."""
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    scores = [0.0] * len(sequences)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        input_ids, lengths = pad_sequences([sequences[i] for i in indices], pad_token_id)
        with compute_precision(model, precision):
            rewards = sequence_rewards(model, input_ids, lengths).tolist()
        for index, reward in zip(indices, rewards):
            scores[index] = round(reward, 4)
    return scores


# ---- training ----

def training_batches(lengths: list[int], batch_size: int, epochs: int, max_steps: int | None, seed: int,
                     group_by_length: bool = True) -> list[list[int]]:
    """Pair indices of every step: seeded shuffles per epoch, length-grouped when asked; ``max_steps`` wins."""
    per_epoch = math.ceil(len(lengths) / batch_size)
    steps = max_steps or per_epoch * epochs
    batches, epoch = [], 0
    while len(batches) < steps:
        if group_by_length:
            sampler = ShuffledLengthGroupedSampler(lengths, batch_size, seed)
            sampler.set_epoch(epoch)
            order = list(sampler)
        else:
            order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        batches += [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        epoch += 1
    return batches[:steps]


def check_train_params(params: dict) -> None:
    missing = [key for key in REQUIRED_TRAIN_KEYS if key not in params]
    if missing:
        raise ValueError(f"rm.train lacks: {', '.join(missing)}")
    if params["batch_size"] < 1 or params["learning_rate"] <= 0:
        raise ValueError(f"rm.train needs batch_size >= 1 and learning_rate > 0, got {params['batch_size']}, "
                         f"{params['learning_rate']}")


def train_reward_model(train_pairs: list[dict], val_pairs: list[dict], base_model: Path, params: dict):
    """Fit the reward model on ``train_pairs`` (``rm.train`` parameters); returns ``(model, tokenizer, history, info)``.

    ``history`` has a ``train`` row every ``logging_steps`` steps (loss and accuracy over the
    interval, learning rate, grad norm, tokens/s) and a ``val`` row at step 0, every
    ``eval_steps`` and at the end (when ``val_pairs`` is not empty).
    """
    from transformers import get_scheduler

    check_train_params(params)
    if not train_pairs:
        raise ValueError("rm.train_pairs is empty: no preference pair survived tokenization")
    precision = resolve_precision(params["precision"])
    tokenizer = load_tokenizer(base_model)
    model, trainable, total = prepare_reward_model(base_model, params["lora"], precision, tokenizer.pad_token_id,
                                                   params["seed"])
    attention, model_attention = use_training_attention(model, params.get("attention", "auto"), precision)
    steps = training_batches([pair_length(p) for p in train_pairs], params["batch_size"], params["epochs"],
                             params.get("max_steps"), params["seed"], params.get("group_by_length", True))
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=params["learning_rate"], weight_decay=params.get("weight_decay", 0.0))
    scheduler = get_scheduler(params.get("lr_scheduler", "linear"), optimizer,
                              num_warmup_steps=params.get("warmup_steps", 0), num_training_steps=len(steps))
    loop = _Loop(model, val_pairs, tokenizer.pad_token_id, precision, params, len(steps))
    loop.validate(0)
    collate = PairCollator(tokenizer.pad_token_id)
    model.train()
    for step, indices in enumerate(steps, 1):
        batch = collate([train_pairs[i] for i in indices])
        with compute_precision(model, precision):
            chosen, rejected = pair_rewards(model, batch)
        loss = pairwise_loss(chosen, rejected, params.get("margin", 0.0))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, params.get("max_grad_norm", 1.0))
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loop.record(step, loss.item(), chosen, rejected, int(batch["lengths"].sum()), grad_norm.item(), learning_rate)
        if step % params.get("eval_steps", 50) == 0 or step == len(steps):
            loop.validate(step)
    if attention != model_attention:
        set_attention(model, model_attention)
    model.eval()
    info = {"precision": precision, "attention": attention, "trainable_parameters": trainable,
            "total_parameters": total, "train_pairs": len(train_pairs), "val_pairs": len(val_pairs),
            "global_steps": len(steps)} | loop.summary()
    return model, tokenizer, loop.history, info


class _Loop:
    """Bookkeeping of :func:`train_reward_model`: interval logs, validation, MLflow, throughput."""

    def __init__(self, model, val_pairs: list[dict], pad_token_id: int, precision: str, params: dict, steps: int):
        self.model, self.val_pairs, self.pad_token_id, self.precision = model, val_pairs, pad_token_id, precision
        self.params, self.steps, self.history = params, steps, []
        self.interval: list[tuple] = []
        self.tokens, self.train_seconds, self.started = 0, 0.0, time.perf_counter()

    def record(self, step: int, loss: float, chosen, rejected, tokens: int, grad_norm: float, lr: float) -> None:
        now = time.perf_counter()
        self.train_seconds += now - self.started
        self.started = now
        self.tokens += tokens
        self.interval.append((loss, (chosen > rejected).float().mean().item(), tokens, grad_norm))
        if step % self.params.get("logging_steps", 10) and step != self.steps:
            return
        losses, accuracies, tokens_seen, norms = zip(*self.interval)
        row = {"step": step, "split": "train", "loss": round(sum(losses) / len(losses), 4),
               "accuracy": round(sum(accuracies) / len(accuracies), 4), "learning_rate": lr,
               "grad_norm": round(norms[-1], 4), "tokens_per_s": round(self.tokens / self.train_seconds, 1)}
        self.history.append(row)
        self.interval = []
        eta = (self.steps - step) * self.train_seconds / step
        logger.info("rm step %d/%d: loss %.4f, accuracy %.3f, %.0f tokens/s, ETA %.0f s", step, self.steps,
                    row["loss"], row["accuracy"], row["tokens_per_s"], eta)
        _log_mlflow({"train_loss": row["loss"], "train_accuracy": row["accuracy"], "learning_rate": lr,
                     "grad_norm": row["grad_norm"], "tokens_per_s": row["tokens_per_s"]}, step)

    def validate(self, step: int) -> None:
        if not self.val_pairs:
            return
        metrics = evaluate_pairs(self.model, self.val_pairs, self.pad_token_id, self.precision,
                                 self.params.get("eval_batch_size", self.params["batch_size"]),
                                 self.params.get("margin", 0.0))
        self.history.append({"step": step, "split": "val"} | {k: v for k, v in metrics.items() if k != "pairs"})
        logger.info("rm step %d validation: accuracy %.3f, mean margin %.3f, loss %.4f", step, metrics["accuracy"],
                    metrics["mean_margin"], metrics["loss"])
        _log_mlflow({"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"],
                     "val_mean_margin": metrics["mean_margin"]}, step)
        self.started = time.perf_counter()  # validation time is not training time

    def summary(self) -> dict:
        train = [row for row in self.history if row["split"] == "train"]
        val = [row for row in self.history if row["split"] == "val"]
        return {"train_runtime_s": round(self.train_seconds, 1),
                "tokens_per_s": round(self.tokens / self.train_seconds, 1) if self.train_seconds else None,
                "final_train_loss": train[-1]["loss"] if train else None,
                "val_accuracy_before": val[0]["accuracy"] if val else None,
                "final_val_accuracy": val[-1]["accuracy"] if val else None,
                "final_val_loss": val[-1]["loss"] if val else None}


def _log_mlflow(metrics: dict, step: int) -> None:
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_metrics(metrics, step=step)
