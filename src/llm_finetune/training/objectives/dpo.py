"""Preference optimisation on tokenized pairs, with LoRA: DPO (sigmoid), IPO and hinge against a
reference, and the reference-free ORPO and SimPO.

The recipe reads top to bottom: build the policy (the start model with a fresh LoRA) ->
reference log-probs once, with the LoRA disabled (the start model itself: no second copy in
memory; the pipeline persists them and reruns reuse them; ORPO and SimPO skip this pass) -> fit ->
held-out report.

Definitions, as in TRL 1.16's ``DPOTrainer`` (``tests/training/objectives/test_dpo_parity_trl.py`` pins them):

* sequence log-prob: the sum of ``log p(label_t | tokens < t)`` over the labelled positions (the
  answer and its end-of-turn / EOS, :mod:`llm_finetune.tokens.pairs`);
* per side, ``logratio = policy log-prob - reference log-prob``; ``delta = chosen - rejected`` logratio;
* ``sigmoid``: ``-log σ(β·delta)``; with ``label_smoothing`` ε, conservative DPO:
  ``-(1-ε)·log σ(β·delta) - ε·log σ(-β·delta)`` (TRL's form of it, as in its ``aot`` loss);
* ``hinge``: ``max(0, 1 - β·delta)``;
* ``ipo``: ``(chosen logratio / chosen tokens - rejected logratio / rejected tokens - 1/(2β))²``
  (TRL divides each side by its labelled tokens);
* rewards ``β·logratio``; accuracy: share of pairs whose chosen reward beats the rejected one
  (a tie counts as wrong); margin: chosen minus rejected reward.

Reference-free, on each side's *mean* log-prob per labelled token ``avg`` (TRL 1.16's experimental
``ORPOTrainer`` and ``CPOTrainer(loss_type="simpo")``, pinned by ``test_orpo_simpo_parity_trl.py``):

* ``orpo``: ``log_odds = (avg_c - avg_r) - (log(1 - e^avg_c) - log(1 - e^avg_r))``; loss
  ``NLL(chosen) - β·mean(log σ(log_odds))``, the NLL a token mean over the chosen answers' labelled
  tokens (the paper's and LLaMA-Factory's SFT term; TRL's also counts the prompt tokens);
* ``simpo``: ``-log σ(β·(avg_c - avg_r) - γ)`` (with ``label_smoothing`` as for sigmoid), no SFT term;
* rewards ``β·avg`` per side.

The batch loss is the mean over its pairs (under gradient accumulation, the mean of the
micro-batch means). Training is the shared engine (:mod:`llm_finetune.training.engine`); this
objective supplies the policy, the pair batches (chosen rows first, then rejected, right-padded,
no attention mask), the loss and the pair metrics. Log-probs come from the LM head at the
labelled positions only (:func:`llm_finetune.training.numerics.sequence_logps`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llm_finetune.tokens.conversations import IGNORE_INDEX
from llm_finetune.tokens.packing import PadCollator
from llm_finetune.tokens.pairs import pair_length
from llm_finetune.training.numerics import scored_in_length_order, sequence_logps
from llm_finetune.training.objectives import Objective

logger = logging.getLogger(__name__)
REFERENCE_FREE = ("orpo", "simpo")
LOSS_TYPES = ("sigmoid", "ipo", "hinge", *REFERENCE_FREE)
PAIR_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected")
ORPO_METRICS = ("nll_loss", "log_odds_ratio", "log_odds_chosen")
PAIR_KEYS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")


@dataclass(frozen=True)
class LossSettings:
    """``dpo.loss_type``, ``dpo.beta``, ``dpo.label_smoothing`` (sigmoid / simpo) and ``dpo.gamma``
    (SimPO's target margin), checked."""

    loss_type: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0
    gamma: float = 0.5

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"dpo.loss_type {self.loss_type!r} is not one of {LOSS_TYPES}")
        if not self.beta > 0:
            raise ValueError(f"dpo.beta must be positive, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"dpo.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.loss_type not in ("sigmoid", "simpo"):
            raise ValueError(f"dpo.label_smoothing applies to the sigmoid and simpo losses, not {self.loss_type!r}")
        if self.gamma < 0:
            raise ValueError(f"dpo.gamma must be >= 0, got {self.gamma}")

    @property
    def needs_reference(self) -> bool:
        """Whether the loss compares with a reference model (DPO, IPO, hinge) or not (ORPO, SimPO)."""
        return self.loss_type not in REFERENCE_FREE

    @property
    def metric_names(self) -> tuple[str, ...]:
        return PAIR_METRICS + (ORPO_METRICS if self.loss_type == "orpo" else ())

    @classmethod
    def from_params(cls, params: dict) -> LossSettings:
        gamma = params.get("gamma")
        return cls(params["loss_type"], float(params["beta"]), float(params.get("label_smoothing") or 0.0),
                   0.5 if gamma is None else float(gamma))


# ---- batches and log-probs ----
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


def pair_logps(model, pairs: list[dict], pad_token_id: int, precision: str = "fp32", batch_size: int = 16,
               reference: bool = False) -> dict[str, list[float]]:
    """``{"chosen": [...], "rejected": [...]}`` sequence log-probs of ``pairs``, in their order.

    ``reference``: with a peft model, its adapter disabled (the model it was started from).
    """
    device = next(model.parameters()).device

    def score(batch_pairs: list[dict]) -> list[tuple[float, float]]:
        batch = collate_pairs(batch_pairs, pad_token_id)
        logps, _ = sequence_logps(model, {k: batch[k].to(device) for k in ("input_ids", "labels")})
        n = len(batch_pairs)
        return list(zip(logps[:n].tolist(), logps[n:].tolist()))

    scored = scored_in_length_order(model, pairs, [pair_length(p) for p in pairs], batch_size, precision, score,
                                    reference)
    return {"chosen": [c for c, _ in scored], "rejected": [r for _, r in scored]}


# ---- losses and metrics ----
def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - e^x)`` for ``x < 0``, stable on both sides of ``-ln 2`` (Mächler's two forms)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def preference_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, settings: LossSettings,
                    chosen_tokens: torch.Tensor | None = None,
                    rejected_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair loss of a reference loss type (see the module docstring); ipo needs the token counts."""
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


def reference_free_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, chosen_tokens: torch.Tensor,
                        rejected_tokens: torch.Tensor, settings: LossSettings
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Batch loss of ``orpo`` / ``simpo`` from the policy's summed log-probs and its per-pair metrics."""
    beta = settings.beta
    chosen_avg = chosen_logps.float() / chosen_tokens.clamp(min=1)
    rejected_avg = rejected_logps.float() / rejected_tokens.clamp(min=1)
    metrics = reward_metrics(beta * chosen_avg.detach(), beta * rejected_avg.detach(), chosen_avg, rejected_avg)
    if settings.loss_type == "simpo":
        logits = beta * (chosen_avg - rejected_avg) - settings.gamma
        smoothing = settings.label_smoothing
        losses = -(1 - smoothing) * F.logsigmoid(logits) - smoothing * F.logsigmoid(-logits)
        return losses.mean(), metrics
    log_odds = (chosen_avg - rejected_avg) - (log1mexp(chosen_avg) - log1mexp(rejected_avg))
    ratio = F.logsigmoid(log_odds)
    nll = -chosen_logps.float().sum() / chosen_tokens.sum().clamp(min=1)
    count = len(chosen_logps)
    metrics |= {"nll_loss": nll.detach().expand(count), "log_odds_ratio": ratio.detach(),
                "log_odds_chosen": log_odds.detach()}
    return nll - beta * ratio.mean(), metrics


def reward_metrics(chosen_rewards, rejected_rewards, chosen_logps, rejected_logps) -> dict[str, torch.Tensor]:
    """Per-pair rewards, accuracies, margins and log-probs (the names TRL logs)."""
    return {"rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "rewards/margins": chosen_rewards - rejected_rewards,
            "logps/chosen": chosen_logps.detach(), "logps/rejected": rejected_logps.detach()}


def pair_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float) -> dict[str, torch.Tensor]:
    """Per-pair metrics of a reference loss: rewards ``β·(policy - reference)``."""
    return reward_metrics(beta * (policy_chosen - ref_chosen).detach(), beta * (policy_rejected - ref_rejected).detach(),
                          policy_chosen, policy_rejected)


def batch_loss(logps: torch.Tensor, tokens: torch.Tensor, ref_logps: torch.Tensor | None,
               settings: LossSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean loss of a ``collate_pairs`` batch (chosen rows first) and its per-pair metrics."""
    n = len(logps) // 2
    if not settings.needs_reference:
        return reference_free_loss(logps[:n], logps[n:], tokens[:n], tokens[n:], settings)
    ref_logps = ref_logps.to(logps.device, logps.dtype)
    losses = preference_loss(logps[:n] - ref_logps[:n], logps[n:] - ref_logps[n:], settings, tokens[:n], tokens[n:])
    return losses.mean(), pair_metrics(logps[:n], logps[n:], ref_logps[:n], ref_logps[n:], settings.beta)


def preference_report(policy: dict, reference: dict | None, pairs: list[dict],
                      settings: LossSettings) -> dict[str, float]:
    """Mean loss and pair metrics of ``policy`` log-probs (``pair_logps`` dicts): against ``reference``
    for a reference loss; a reference-free loss ignores it."""
    def values(side: dict, key: str) -> torch.Tensor:
        return torch.tensor(side[key], dtype=torch.float64)

    def tokens(key: str) -> torch.Tensor:
        return torch.tensor([sum(x != IGNORE_INDEX for x in p[f"{key}_labels"][1:]) for p in pairs])

    pc, pr = values(policy, "chosen"), values(policy, "rejected")
    if not settings.needs_reference:
        loss, metrics = reference_free_loss(pc, pr, tokens("chosen"), tokens("rejected"), settings)
    else:
        rc, rr = values(reference, "chosen"), values(reference, "rejected")
        loss = preference_loss(pc - rc, pr - rr, settings, tokens("chosen"), tokens("rejected")).mean()
        metrics = pair_metrics(pc, pr, rc, rr, settings.beta)
    return {"loss": round(loss.item(), 6)} | {name: round(value.mean().item(), 6) for name, value in metrics.items()}


# ---- model and objective ----
def build_policy(base_model: Path, start_adapter: Path | None, lora: dict, precision: str):
    """The start model (base, or base + SFT adapter merged in fp32) with a fresh trainable LoRA.

    Its disabled state is exactly the start model: the reference of the DPO loss. Frozen weights
    in bf16 when training in bf16, LoRA weights in fp32.
    """
    from peft import get_peft_model

    from llm_finetune.models.loading import load_causal_lm
    from llm_finetune.models.tuning import half_dtype, lora_config

    # the SFT adapter merges into fp32 weights (exact); without one the base loads straight in the
    # training dtype, so a GPU never holds an fp32 copy (the same rounding as casting after)
    model = load_causal_lm(base_model, dtype=torch.float32 if start_adapter else half_dtype(precision),
                           adapter=start_adapter).to(half_dtype(precision))
    model = get_peft_model(model, lora_config(lora))
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    model.config.use_cache = False
    return model


def with_reference(pairs: list[dict], reference: dict | None) -> list[dict]:
    """Training rows: each pair's token fields and its reference log-probs (none for a reference-free loss)."""
    if reference is None:
        return [{k: p[k] for k in PAIR_KEYS} for p in pairs]
    if len(reference["chosen"]) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs but {len(reference['chosen'])} reference log-probs")
    return [{k: p[k] for k in PAIR_KEYS} | {"ref_chosen": c, "ref_rejected": r}
            for p, c, r in zip(pairs, reference["chosen"], reference["rejected"])]


class PreferenceObjective(Objective):
    """DPO / IPO / hinge on pairs that carry their reference log-probs (:func:`with_reference`), or the
    reference-free ORPO / SimPO on pairs alone."""

    name = "dpo"

    def __init__(self, base_model: Path, start_adapter: Path | None, settings: LossSettings, pad_token_id: int):
        self.base_model, self.start_adapter = Path(base_model), start_adapter
        self.settings, self.pad_token_id = settings, pad_token_id
        self.metric_names = settings.metric_names

    def build_model(self, settings, precision: str):
        model = build_policy(self.base_model, self.start_adapter, settings.lora.model_dump(), precision)
        return (model, sum(p.numel() for p in model.parameters() if p.requires_grad),
                sum(p.numel() for p in model.parameters()))

    def length(self, row: dict) -> int:
        return pair_length(row)

    def collate(self, rows: list[dict]) -> dict:
        return collate_pairs(rows, self.pad_token_id)

    def loss(self, model, batch: dict, num_items_in_batch=None):
        logps, tokens = sequence_logps(model, batch)
        return batch_loss(logps, tokens, batch.get("ref_logps"), self.settings)

    def summary(self, history: list[dict], train_rows: list[dict]) -> dict:
        last_val = next(row for row in reversed(history) if row["split"] == "val")
        return {"loss_type": self.settings.loss_type, "beta": self.settings.beta,
                "final_val_reward_accuracy": last_val["rewards/accuracies"],
                "final_val_reward_margin": last_val["rewards/margins"]}
