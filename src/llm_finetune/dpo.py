"""Direct preference optimisation on tokenized pairs: DPO (sigmoid), IPO and hinge losses, with LoRA.

The recipe reads top to bottom: build the policy (the start model with a fresh LoRA) ->
reference log-probs once, with the LoRA disabled (the start model itself: no second copy in
memory; the pipeline persists them and reruns reuse them) -> fit -> held-out report.

Definitions, as in TRL 1.16's ``DPOTrainer`` (``tests/test_dpo_parity_trl.py`` pins them):

* sequence log-prob: the sum of ``log p(label_t | tokens < t)`` over the labelled positions (the
  answer and its end-of-turn / EOS, :mod:`llm_finetune.preference_tokens`);
* per side, ``logratio = policy log-prob - reference log-prob``; ``delta = chosen - rejected`` logratio;
* ``sigmoid``: ``-log σ(β·delta)``; with ``label_smoothing`` ε, conservative DPO:
  ``-(1-ε)·log σ(β·delta) - ε·log σ(-β·delta)`` (TRL's form of it, as in its ``aot`` loss);
* ``hinge``: ``max(0, 1 - β·delta)``;
* ``ipo``: ``(chosen logratio / chosen tokens - rejected logratio / rejected tokens - 1/(2β))²``
  (TRL divides each side by its labelled tokens);
* rewards ``β·logratio``; accuracy: share of pairs whose chosen reward beats the rejected one
  (a tie counts as wrong); margin: chosen minus rejected reward.

The batch loss is the mean over its pairs (under gradient accumulation, the mean of the
micro-batch means). Training is a transformers ``Trainer`` subclass rather than a plain loop:
the SFT recipe's optimiser and schedule names, seeded length-grouped batches, bf16 autocast,
clipping, periodic evaluation and the throughput / MLflow callbacks come unchanged, and the
subclass only replaces the loss and averages the pair metrics into the logs. Speed as in SFT
(:mod:`llm_finetune.training`): bf16 base weights with fp32 LoRA under autocast, no attention
mask (right padding), and the LM head run only at the labelled positions.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from llm_finetune.attention import use_training_attention
from llm_finetune.causal_loss import causal_lm, supports_trained_token_loss
from llm_finetune.packing import PadCollator
from llm_finetune.tokenization import IGNORE_INDEX

logger = logging.getLogger(__name__)
LOSS_TYPES = ("sigmoid", "ipo", "hinge")
PAIR_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected")


@dataclass(frozen=True)
class LossSettings:
    """``dpo.loss_type``, ``dpo.beta`` and ``dpo.label_smoothing`` (sigmoid only), checked."""

    loss_type: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"dpo.loss_type {self.loss_type!r} is not one of {LOSS_TYPES}")
        if not self.beta > 0:
            raise ValueError(f"dpo.beta must be positive, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"dpo.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError(f"dpo.label_smoothing applies to the sigmoid loss only, not {self.loss_type!r}")

    @classmethod
    def from_params(cls, params: dict) -> LossSettings:
        return cls(params["loss_type"], float(params["beta"]), float(params.get("label_smoothing") or 0.0))


# ---- log-probs ----
def sequence_logps(model, input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log-prob sums, labelled token counts)`` per row: ``log p(label_t | < t)`` over labelled positions.

    The LM head runs on the labelled positions only where the model's logits are plainly
    ``lm_head(hidden)`` (:func:`llm_finetune.causal_loss.supports_trained_token_loss`).
    """
    targets = labels[:, 1:]
    trained = targets != IGNORE_INDEX
    if supports_trained_token_loss(model):
        causal = causal_lm(model)
        hidden = causal.model(input_ids=input_ids, use_cache=False).last_hidden_state
        logits = causal.get_output_embeddings()(hidden[:, :-1][trained]).float()
        cap = getattr(causal.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    else:
        logits = model(input_ids=input_ids, use_cache=False).logits[:, :-1][trained].float()
    token_logps = -F.cross_entropy(logits, targets[trained], reduction="none")
    rows = trained.nonzero()[:, 0]
    sums = torch.zeros(len(input_ids), dtype=token_logps.dtype, device=token_logps.device)
    return sums.index_add(0, rows, token_logps), trained.sum(dim=1)


def collate_pairs(pairs: list[dict], pad_token_id: int) -> dict:
    """One batch of ``2n`` rows, the chosen sides first, right-padded, no attention mask; plus
    ``ref_logps`` (same order) when the pairs carry ``ref_chosen`` / ``ref_rejected``."""
    rows = [{"input_ids": p[f"{side}_input_ids"], "labels": p[f"{side}_labels"]}
            for side in ("chosen", "rejected") for p in pairs]
    batch = PadCollator(pad_token_id, attention_mask=False)(rows)
    if "ref_chosen" in pairs[0]:
        batch["ref_logps"] = torch.tensor([p["ref_chosen"] for p in pairs] + [p["ref_rejected"] for p in pairs],
                                          dtype=torch.float32)
    return batch


def compute_context(model, precision: str, reference: bool = False, autocast: bool = True) -> ExitStack:
    """The numerics of training: bf16 autocast with LoRA inputs left in bf16 (peft would cast them to
    fp32 and autocast straight back); ``reference``: the LoRA disabled (the start model)."""
    from peft.helpers import disable_input_dtype_casting

    stack = ExitStack()
    is_peft = hasattr(model, "peft_config")
    if reference and is_peft:
        stack.enter_context(model.disable_adapter())
    if precision == "bf16":
        if autocast:
            stack.enter_context(torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16))
        if is_peft:
            stack.enter_context(disable_input_dtype_casting(model))
    return stack


@torch.no_grad()
def pair_logps(model, pairs: list[dict], pad_token_id: int, precision: str = "fp32", batch_size: int = 16,
               reference: bool = False) -> dict[str, list[float]]:
    """``{"chosen": [...], "rejected": [...]}`` sequence log-probs of ``pairs``, in their order.

    ``reference``: with a peft model, its adapter disabled (the model it was started from).
    Batches are formed by length (less padding) and the results put back in order.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda i: max(len(pairs[i]["chosen_input_ids"]),
                                                         len(pairs[i]["rejected_input_ids"])))
    chosen, rejected = [0.0] * len(pairs), [0.0] * len(pairs)
    with compute_context(model, precision, reference):
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            batch = collate_pairs([pairs[i] for i in indices], pad_token_id)
            logps, _ = sequence_logps(model, batch["input_ids"].to(device), batch["labels"].to(device))
            for index, value_c, value_r in zip(indices, logps[:len(indices)].tolist(), logps[len(indices):].tolist()):
                chosen[index], rejected[index] = value_c, value_r
    model.train(was_training)
    return {"chosen": chosen, "rejected": rejected}


# ---- losses and metrics ----
def preference_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, settings: LossSettings,
                    chosen_tokens: torch.Tensor | None = None,
                    rejected_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair loss of ``settings.loss_type`` (see the module docstring); ipo needs the token counts."""
    beta = settings.beta
    if settings.loss_type == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs the labelled token counts of both sides")
        delta = chosen_logratios / chosen_tokens.clamp(min=1) - rejected_logratios / rejected_tokens.clamp(min=1)
        return (delta - 1 / (2 * beta)) ** 2
    delta = chosen_logratios - rejected_logratios
    if settings.loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    smoothing = settings.label_smoothing
    return -(1 - smoothing) * F.logsigmoid(beta * delta) - smoothing * F.logsigmoid(-beta * delta)


def pair_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float) -> dict[str, torch.Tensor]:
    """Per-pair rewards, accuracies, margins and log-probs (the names TRL logs)."""
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return {"rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "rewards/margins": chosen_rewards - rejected_rewards,
            "logps/chosen": policy_chosen.detach(), "logps/rejected": policy_rejected.detach()}


def batch_loss(logps: torch.Tensor, tokens: torch.Tensor, ref_logps: torch.Tensor,
               settings: LossSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean loss of a ``collate_pairs`` batch (chosen rows first) and its per-pair metrics."""
    n = len(logps) // 2
    ref_logps = ref_logps.to(logps.device, logps.dtype)
    losses = preference_loss(logps[:n] - ref_logps[:n], logps[n:] - ref_logps[n:], settings, tokens[:n], tokens[n:])
    return losses.mean(), pair_metrics(logps[:n], logps[n:], ref_logps[:n], ref_logps[n:], settings.beta)


def preference_report(policy: dict, reference: dict, pairs: list[dict], settings: LossSettings) -> dict[str, float]:
    """Mean loss and pair metrics of ``policy`` against ``reference`` log-probs (``pair_logps`` dicts)."""
    def values(side: dict, key: str) -> torch.Tensor:
        return torch.tensor(side[key], dtype=torch.float64)

    def tokens(key: str) -> torch.Tensor:
        return torch.tensor([sum(x != IGNORE_INDEX for x in p[f"{key}_labels"][1:]) for p in pairs])

    pc, pr, rc, rr = values(policy, "chosen"), values(policy, "rejected"), values(reference, "chosen"), values(
        reference, "rejected")
    loss = preference_loss(pc - rc, pr - rr, settings, tokens("chosen"), tokens("rejected")).mean()
    metrics = pair_metrics(pc, pr, rc, rr, settings.beta)
    return {"loss": round(loss.item(), 6)} | {name: round(value.mean().item(), 6) for name, value in metrics.items()}


# ---- model ----
def build_policy(base_model: Path, start_adapter: Path | None, params: dict, precision: str):
    """The start model (base, or base + SFT adapter merged in fp32) with a fresh trainable LoRA.

    Its disabled state is exactly the start model: the reference of the DPO loss. Frozen weights
    in bf16 when training in bf16, LoRA weights in fp32; the training attention is set.
    """
    from peft import get_peft_model

    from llm_finetune.models.loading import load_causal_lm
    from llm_finetune.tuning_methods import lora_config

    model = load_causal_lm(base_model, dtype=torch.float32, adapter=start_adapter)
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    model = get_peft_model(model, lora_config(params["lora"]))
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    model.config.use_cache = False
    use_training_attention(model, params.get("attention", "auto"), precision)
    return model


# ---- training ----
def with_reference(pairs: list[dict], reference: dict) -> list[dict]:
    """Training rows: each pair's token fields and its reference log-probs (a list serves as the dataset)."""
    if len(reference["chosen"]) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs but {len(reference['chosen'])} reference log-probs")
    keys = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")
    return [{k: p[k] for k in keys} | {"ref_chosen": c, "ref_rejected": r}
            for p, c, r in zip(pairs, reference["chosen"], reference["rejected"])]


def _trainer_class():
    from transformers import Trainer

    from llm_finetune.sampling import ShuffledLengthGroupedSampler

    class PreferenceTrainer(Trainer):
        """``Trainer`` with the DPO loss; pair metrics averaged per pair into the train / eval logs."""

        def __init__(self, *args, settings: LossSettings, length_grouped: bool, **kwargs):
            super().__init__(*args, **kwargs)
            self.settings, self.length_grouped = settings, length_grouped
            self.loss_is_scaled_for_ga = False  # a mean over pairs: the Trainer divides by the accumulation steps
            self.sums = {"train": {}, "eval": {}}

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if not self.length_grouped:
                return super()._get_train_sampler(train_dataset)
            lengths = [max(len(r["chosen_input_ids"]), len(r["rejected_input_ids"])) for r in dataset]
            return ShuffledLengthGroupedSampler(lengths, self.args.per_device_train_batch_size, self.args.data_seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            with self.accelerator.autocast():
                logps, tokens = sequence_logps(model, inputs["input_ids"], inputs["labels"])
            loss, metrics = batch_loss(logps, tokens, inputs["ref_logps"], self.settings)
            sums = self.sums["train" if model.training else "eval"]
            for name, values in metrics.items():
                total, count = sums.get(name, (0.0, 0))
                sums[name] = (total + values.sum().item(), count + len(values))
            return (loss, {"loss": loss}) if return_outputs else loss

        def log(self, logs: dict, start_time: float | None = None) -> None:
            mode, prefix = ("eval", "eval_") if "eval_loss" in logs else ("train", "") if "loss" in logs else (None, "")
            if mode:
                logs |= {f"{prefix}{name}": round(total / count, 6) for name, (total, count) in self.sums[mode].items()}
                self.sums[mode] = {}
            super().log(logs, start_time)

    return PreferenceTrainer


class MlflowPairMetricsCallback(TrainerCallback):
    """Log the pair metrics of each train / eval log to MLflow as ``train_<name>`` / ``val_<name>``."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        import mlflow

        if mlflow.active_run() is None or not logs:
            return
        metrics = {f"train_{name}": logs[name] for name in PAIR_METRICS if name in logs}
        metrics |= {f"val_{name}": logs[f"eval_{name}"] for name in PAIR_METRICS if f"eval_{name}" in logs}
        if metrics:
            mlflow.log_metrics(metrics, step=state.global_step)


def train_policy(model, tokenizer, train_pairs: list[dict], val_pairs: list[dict], references: dict, params: dict,
                 precision: str, output_dir: Path, callbacks=()) -> tuple[list[dict], dict]:
    """Fit the LoRA of ``model`` (from :func:`build_policy`) on the pairs; ``(history, info)``.

    ``references``: ``{"train": pair_logps dict, "val": ...}``, computed before training.
    """
    from llm_finetune.training import Throughput, peak_gemm_flops, training_arguments

    if not train_pairs or not val_pairs:
        raise ValueError(f"dpo needs train and val pairs, got {len(train_pairs)} and {len(val_pairs)}")
    settings = LossSettings.from_params(params)
    args = training_arguments(params, precision, Path(output_dir), checkpointing=False)
    args.remove_unused_columns = False  # the pair fields are not model arguments
    args.label_names = ["labels"]
    total = sum(p.numel() for p in model.parameters())
    throughput = Throughput(flops_per_token=4 * total,
                            peak_flops=peak_gemm_flops(torch.bfloat16 if precision == "bf16" else torch.float32))
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=with_reference(train_pairs, references["train"]),
        eval_dataset=with_reference(val_pairs, references["val"]),
        data_collator=lambda rows: collate_pairs(rows, tokenizer.pad_token_id),
        callbacks=[throughput, MlflowPairMetricsCallback(), *callbacks], settings=settings,
        length_grouped=bool(params.get("group_by_length", True)))
    with compute_context(model, precision, autocast=False):  # the Trainer autocasts in compute_loss
        result = trainer.train()
        if trainer.state.global_step % params["eval_steps"]:
            trainer.evaluate()
    history = loss_history(trainer.state.log_history)
    last_val = next(row for row in reversed(history) if row["split"] == "val")
    runtime = result.metrics["train_runtime"]
    info = {"loss_type": settings.loss_type, "beta": settings.beta, "precision": precision,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_parameters": total, "global_steps": trainer.state.global_step,
            "train_runtime_s": round(runtime, 1), "train_pairs": len(train_pairs), "val_pairs": len(val_pairs),
            "input_tokens_per_s": round(trainer.state.num_input_tokens_seen / runtime, 1) if runtime else None,
            "mean_mfu": throughput.mean_mfu(), "final_train_loss": round(result.training_loss, 6),
            "final_val_loss": last_val["loss"], "final_val_reward_accuracy": last_val["rewards/accuracies"],
            "final_val_reward_margin": last_val["rewards/margins"]}
    return history, info


def loss_history(log_history: list[dict]) -> list[dict]:
    """Per-step train and val loss with the pair metrics, from the Trainer's log."""
    rows = []
    for entry in log_history:
        if "loss" in entry:
            rows.append({"step": entry["step"], "split": "train", "loss": entry["loss"],
                         "learning_rate": entry.get("learning_rate")}
                        | {k: entry[k] for k in PAIR_METRICS if k in entry})
        elif "eval_loss" in entry:
            rows.append({"step": entry["step"], "split": "val", "loss": entry["eval_loss"]}
                        | {k: entry[f"eval_{k}"] for k in PAIR_METRICS if f"eval_{k}" in entry})
    return rows


# ---- saving: one LoRA for base + SFT + DPO ----
@dataclass
class LoraFolder:
    """A LoRA adapter as tensors and a peft ``LoraConfig``, saved like ``PeftModel.save_pretrained``."""

    state: dict
    config: object

    def save_pretrained(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state.items()}, str(Path(folder) / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        self.config.save_pretrained(str(folder))


def lora_scale(config: dict) -> float:
    """The factor peft multiplies ``B @ A`` by; raises for what cannot be stacked exactly."""
    blocked = [k for k in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save") if config.get(k)]
    if config.get("peft_type", "LORA") != "LORA" or config.get("bias", "none") != "none" or blocked:
        raise ValueError(f"cannot stack this adapter exactly (peft_type {config.get('peft_type')}, bias "
                         f"{config.get('bias')}, {', '.join(blocked) or 'no extras'}): use a plain LoRA SFT adapter")
    return config["lora_alpha"] / (config["r"] ** 0.5 if config.get("use_rslora") else config["r"])


def stack_lora(first: tuple[dict, dict], second: tuple[dict, dict]) -> tuple[dict, int]:
    """``(state, rank)`` of one LoRA whose update (scale 1) is the sum of two ``(state, config)`` LoRAs.

    ``[A1; A2]`` and ``[s1·B1, s2·B2]`` give ``B @ A = s1·B1A1 + s2·B2A2`` exactly; a module only one
    adapter trains gets zero blocks for the other.
    """
    (state_1, config_1), (state_2, config_2) = first, second
    ranks, scales = (config_1["r"], config_2["r"]), (lora_scale(config_1), lora_scale(config_2))
    modules = set()
    for key in [*state_1, *state_2]:
        if not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise ValueError(f"cannot stack adapter weight {key!r}: only LoRA A / B matrices")
        modules.add(key.rsplit(".", 2)[0])
    stacked = {}
    for module in sorted(modules):
        a_key, b_key = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
        some = state_1 if a_key in state_1 else state_2
        width, height = some[a_key].shape[1], some[b_key].shape[0]
        a_parts, b_parts = [], []
        for state, rank, scale in zip((state_1, state_2), ranks, scales):
            a_parts.append(state[a_key].float() if a_key in state else torch.zeros(rank, width))
            b_parts.append(state[b_key].float() * scale if b_key in state else torch.zeros(height, rank))
        stacked[a_key], stacked[b_key] = torch.cat(a_parts, 0), torch.cat(b_parts, 1)
    return stacked, sum(ranks)


def stacked_adapter(start_adapter: Path, model) -> LoraFolder:
    """The SFT adapter in ``start_adapter`` and the trained DPO LoRA of ``model`` as one LoRA on the base."""
    import json
    from dataclasses import replace

    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    sft = (load_file(str(Path(start_adapter) / "adapter_model.safetensors")),
           json.loads((Path(start_adapter) / "adapter_config.json").read_text()))
    config = model.peft_config["default"]
    dpo = ({k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()}, config.to_dict())
    state, rank = stack_lora(sft, dpo)
    prefix = "base_model.model."
    targets = sorted({key.rsplit(".", 2)[0].removeprefix(prefix) for key in state})
    return LoraFolder(state, replace(config, r=rank, lora_alpha=rank, use_rslora=False, target_modules=targets))
