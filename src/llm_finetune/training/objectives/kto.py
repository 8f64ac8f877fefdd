"""Kahneman-Tversky optimisation on labelled completions (:mod:`llm_finetune.tokens.labelled`), with LoRA.

The recipe is DPO's: the policy is the start model with a fresh LoRA, whose disabled state is the
reference (:func:`llm_finetune.training.objectives.dpo.build_policy`); reference log-probs of every
completion and of its KL partner are computed once and cached by the pipeline; training is the
shared engine, reading rows in order (the KL partners of a batch are the batch's own completions).

Definitions, as in TRL 1.16's ``KTOTrainer`` (``tests/training/objectives/test_kto_parity_trl.py``
pins them), with ``logratio = log π(y|x) - log π_ref(y|x)`` summed over the completion's tokens:

* KL estimate ``z = max(0, mean over the batch of (log π(y'|x) - log π_ref(y'|x)))`` on the mismatched
  rows, without gradient;
* ``kto``: desirable ``1 - σ(β·(logratio - z))``, undesirable ``1 - σ(β·(z - logratio))``;
  ``apo_zero_unpaired``: ``1 - σ(β·logratio)`` and ``σ(β·logratio)`` (no KL term);
* weighted by ``desirable_weight`` / ``undesirable_weight``; the batch loss is the mean over rows;
* rewards ``β·logratio``; a row counts as right (``rewards/accuracies``) when its logratio is above
  ``z`` for a desirable row and below it for an undesirable one (a tie is wrong, as in DPO).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from llm_finetune.tokens.labelled import labelled_length
from llm_finetune.tokens.packing import PadCollator
from llm_finetune.training.numerics import scored_in_length_order, sequence_logps
from llm_finetune.training.objectives import Objective
from llm_finetune.training.objectives.dpo import build_policy
from llm_finetune.training.parallel import global_mean

LOSS_TYPES = ("kto", "apo_zero_unpaired")
KTO_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
               "logps/rejected", "kl")


@dataclass(frozen=True)
class KtoSettings:
    """``kto.loss_type``, ``kto.beta``, ``kto.desirable_weight`` and ``kto.undesirable_weight``, checked."""

    loss_type: str = "kto"
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"kto.loss_type {self.loss_type!r} is not one of {LOSS_TYPES}")
        if not self.beta > 0:
            raise ValueError(f"kto.beta must be positive, got {self.beta}")
        if not (self.desirable_weight > 0 and self.undesirable_weight > 0):
            raise ValueError("kto.desirable_weight and kto.undesirable_weight must be positive")

    @classmethod
    def from_params(cls, params: dict) -> KtoSettings:
        return cls(params.get("loss_type", "kto"), float(params.get("beta", 0.1)),
                   float(params.get("desirable_weight", 1.0)), float(params.get("undesirable_weight", 1.0)))


def collate_labelled(rows: list[dict], pad_token_id: int) -> dict:
    """Completions and their KL rows, each right-padded without a mask; labels and reference log-probs."""
    pad = PadCollator(pad_token_id, attention_mask=False)
    main = pad([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    kl = pad([{"input_ids": r["kl_input_ids"], "labels": r["kl_labels"]} for r in rows])
    batch = main | {"kl_input_ids": kl["input_ids"], "kl_labels": kl["labels"],
                    "label": torch.tensor([bool(r["label"]) for r in rows])}
    if "ref_logp" in rows[0]:
        batch["ref_logps"] = torch.tensor([r["ref_logp"] for r in rows], dtype=torch.float32)
        batch["ref_kl_logps"] = torch.tensor([r["ref_kl_logp"] for r in rows], dtype=torch.float32)
    return batch


def kto_loss(logps: torch.Tensor, ref_logps: torch.Tensor, kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor,
             labels: torch.Tensor, settings: KtoSettings,
             mean=torch.mean) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean loss over the rows and per-row metrics (see the module docstring). ``mean``: how the KL
    estimate averages its rows (training under N processes: over every rank's rows, as TRL gathers it)."""
    ref_logps, ref_kl_logps = ref_logps.to(logps.device, logps.dtype), ref_kl_logps.to(logps.device, logps.dtype)
    labels = labels.to(logps.device).bool()
    beta = settings.beta
    if settings.loss_type == "kto":
        kl = mean(kl_logps.detach() - ref_kl_logps).clamp(min=0)
    else:
        kl = torch.zeros((), device=logps.device, dtype=logps.dtype)
    logratios = logps - ref_logps
    chosen, rejected = logratios[labels], logratios[~labels]
    if settings.loss_type == "kto":
        chosen_losses, rejected_losses = 1 - torch.sigmoid(beta * (chosen - kl)), 1 - torch.sigmoid(beta * (kl - rejected))
    else:
        chosen_losses, rejected_losses = 1 - torch.sigmoid(beta * chosen), torch.sigmoid(beta * rejected)
    losses = torch.cat((settings.desirable_weight * chosen_losses, settings.undesirable_weight * rejected_losses))
    rewards = beta * logratios.detach()
    right = torch.where(labels, logratios.detach() > kl, logratios.detach() < kl)
    metrics = {"rewards/chosen": rewards[labels], "rewards/rejected": rewards[~labels],
               "rewards/accuracies": right.float(), "logps/chosen": logps.detach()[labels],
               "logps/rejected": logps.detach()[~labels], "kl": kl.detach().reshape(1)}
    if labels.any() and (~labels).any():
        metrics["rewards/margins"] = (rewards[labels].mean() - rewards[~labels].mean()).reshape(1)
    return losses.mean(), metrics


def labelled_logps(model, rows: list[dict], pad_token_id: int, precision: str = "fp32", batch_size: int = 16,
                   reference: bool = False) -> dict[str, list[float]]:
    """``{"logps": [...], "kl_logps": [...]}`` of each row's completion and its KL row, in the rows' order.

    ``reference``: with a peft model, its adapter disabled (the model it was started from).
    """
    device = next(model.parameters()).device

    def score(batch_rows: list[dict]) -> list[tuple[float, float]]:
        batch = collate_labelled(batch_rows, pad_token_id)
        main, _ = sequence_logps(model, {"input_ids": batch["input_ids"].to(device),
                                         "labels": batch["labels"].to(device)})
        kl, _ = sequence_logps(model, {"input_ids": batch["kl_input_ids"].to(device),
                                       "labels": batch["kl_labels"].to(device)})
        return list(zip(main.tolist(), kl.tolist()))

    scored = scored_in_length_order(model, rows, [labelled_length(r) for r in rows], batch_size, precision, score,
                                    reference)
    return {"logps": [m for m, _ in scored], "kl_logps": [k for _, k in scored]}


def labelled_report(policy: dict, reference: dict, rows: list[dict], settings: KtoSettings,
                    group_size: int) -> dict[str, float]:
    """Held-out loss and metrics of ``policy`` against ``reference`` (``labelled_logps`` dicts), the KL
    estimated per group of ``group_size`` rows as in training; with ``pair`` indices (rows made from
    preference pairs), also the DPO-scale pairwise accuracy of the rewards."""
    totals: dict[str, tuple[float, int]] = {}
    losses = []
    for start in range(0, len(rows), group_size):
        part = slice(start, start + group_size)
        tensors = [torch.tensor(values[part], dtype=torch.float64) for values in (
            policy["logps"], reference["logps"], policy["kl_logps"], reference["kl_logps"])]
        labels = torch.tensor([bool(r["label"]) for r in rows[part]])
        loss, metrics = kto_loss(*tensors, labels, settings)
        losses.append((loss.item(), len(labels)))
        for name, values in metrics.items():
            total, count = totals.get(name, (0.0, 0))
            totals[name] = (total + values.sum().item(), count + len(values))
    report = {"loss": round(sum(loss * n for loss, n in losses) / max(sum(n for _, n in losses), 1), 6)}
    report |= {name: round(total / count, 6) for name, (total, count) in totals.items() if count}
    pairs: dict[int, dict[bool, float]] = {}
    for row, logp, ref in zip(rows, policy["logps"], reference["logps"]):
        if row.get("pair") is not None:
            pairs.setdefault(row["pair"], {})[bool(row["label"])] = logp - ref
    complete = [p for p in pairs.values() if len(p) == 2]
    if complete:
        report["pairwise_accuracy"] = round(sum(p[True] > p[False] for p in complete) / len(complete), 6)
        report["pairs"] = len(complete)
    return report


class KtoObjective(Objective):
    """KTO on labelled rows that carry their reference log-probs (``ref_logp`` / ``ref_kl_logp``)."""

    name = "kto"
    metric_names = KTO_METRICS
    sequential = True  # the KL partners of a batch are its own completions (tokens.labelled)

    def __init__(self, base_model: Path, start_adapter: Path | None, settings: KtoSettings, pad_token_id: int):
        self.base_model, self.start_adapter = Path(base_model), start_adapter
        self.settings, self.pad_token_id = settings, pad_token_id

    def build_model(self, settings, precision: str):
        model = build_policy(self.base_model, self.start_adapter, settings.lora.model_dump(), precision)
        return (model, sum(p.numel() for p in model.parameters() if p.requires_grad),
                sum(p.numel() for p in model.parameters()))

    def length(self, row: dict) -> int:
        return labelled_length(row)

    def collate(self, rows: list[dict]) -> dict:
        return collate_labelled(rows, self.pad_token_id)

    def loss(self, model, batch: dict, num_items_in_batch=None):
        logps, _ = sequence_logps(model, {"input_ids": batch["input_ids"], "labels": batch["labels"]})
        with torch.no_grad():
            kl_logps, _ = sequence_logps(model, {"input_ids": batch["kl_input_ids"], "labels": batch["kl_labels"]})
        return kto_loss(logps, batch["ref_logps"], kl_logps, batch["ref_kl_logps"], batch["label"], self.settings,
                        mean=global_mean)

    def flops_per_token(self, total_parameters: int, settings) -> float:
        """The completions train (forward + backward) and the KL rows only run forward: ~ (4N + 2N) per token."""
        return 6 * total_parameters if settings.method != "full" else 8 * total_parameters

    def summary(self, history: list[dict], train_rows: list[dict]) -> dict:
        last_val = next(row for row in reversed(history) if row["split"] == "val")
        return {"loss_type": self.settings.loss_type, "beta": self.settings.beta,
                "desirable_rows": sum(bool(r["label"]) for r in train_rows),
                "undesirable_rows": sum(not r["label"] for r in train_rows),
                "final_val_reward_accuracy": last_val.get("rewards/accuracies"), "final_val_kl": last_val.get("kl")}
