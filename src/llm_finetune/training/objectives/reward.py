"""Pairwise reward modelling: ``-log sigmoid(r_chosen - r_rejected - margin)`` on the shared engine.

The model (a one-output sequence classifier, LoRA + a fully trained ``score`` head) and the reward
index rule (the score head at each sequence's last real token, ``length - 1``) are in
:mod:`llm_finetune.models.reward`, shared with scoring at judge time. Chosen and rejected sequences
of the same pairs go through one forward pass (chosen first, then rejected), right-padded, no
attention mask. The loss is the mean over pairs; the per-pair metrics are the ranking accuracy
(a tie counts as wrong), the margin and both rewards, averaged into the train / val logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llm_finetune.models.precision import compute_context
from llm_finetune.models.reward import pad_sequences, prepare_reward_model, sequence_rewards
from llm_finetune.tokens.packing import in_length_order
from llm_finetune.tokens.pairs import pair_length
from llm_finetune.training.objectives import Objective

RANKING_METRICS = ("accuracy", "mean_margin", "mean_chosen_reward", "mean_rejected_reward")


@dataclass
class PairCollator:
    """Chosen then rejected sequences of ``rows`` in one right-padded batch, with their lengths."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict:
        sequences = [r["chosen_input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows]
        input_ids, lengths = pad_sequences(sequences, self.pad_token_id)
        return {"input_ids": input_ids, "lengths": lengths}


def pair_rewards(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(chosen, rejected)`` rewards of a :class:`PairCollator` batch."""
    rewards = sequence_rewards(model, batch["input_ids"], batch["lengths"])
    half = len(rewards) // 2
    return rewards[:half], rewards[half:]


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean of ``-log sigmoid(r_chosen - r_rejected - margin)`` over pairs."""
    return -F.logsigmoid(chosen - rejected - margin).mean()


def ranking_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair ranking figures: correct (1 / 0), margin and both rewards."""
    chosen, rejected = chosen.detach().float(), rejected.detach().float()
    return {"accuracy": (chosen > rejected).float(), "mean_margin": chosen - rejected,
            "mean_chosen_reward": chosen, "mean_rejected_reward": rejected}


def ranking_report(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> dict:
    """Pairwise accuracy, mean margin, mean rewards and the loss over a set of pairs."""
    metrics = ranking_metrics(chosen, rejected)
    return {"pairs": len(chosen)} | {name: round(values.mean().item(), 4) for name, values in metrics.items()} | {
        "loss": round(pairwise_loss(chosen.float(), rejected.float(), margin).item(), 4)}


@torch.no_grad()
def evaluate_pairs(model, pairs: list[dict], pad_token_id: int, precision: str, batch_size: int = 16,
                   margin: float = 0.0) -> dict:
    """:func:`ranking_report` over ``pairs``, in batches of similar length."""
    if not pairs:
        raise ValueError("no preference pairs to evaluate")
    was_training = model.training
    model.eval()
    collate = PairCollator(pad_token_id)

    def score(batch_pairs: list[dict]) -> list[tuple[float, float]]:
        with compute_context(model, precision):
            chosen, rejected = pair_rewards(model, collate(batch_pairs))
        return list(zip(chosen.cpu().tolist(), rejected.cpu().tolist()))

    scored = in_length_order(pairs, [pair_length(p) for p in pairs], batch_size, score)
    model.train(was_training)
    return ranking_report(torch.tensor([c for c, _ in scored]), torch.tensor([r for _, r in scored]), margin)


class RewardObjective(Objective):
    """The pairwise reward model on tokenized preference pairs."""

    name = "reward"
    metric_names = RANKING_METRICS

    def __init__(self, base_model: Path, pad_token_id: int, margin: float = 0.0):
        self.base_model, self.pad_token_id, self.margin = Path(base_model), pad_token_id, margin

    def build_model(self, settings, precision: str):
        return prepare_reward_model(self.base_model, settings.lora.model_dump(), precision, self.pad_token_id,
                                    settings.seed)

    def row(self, row: dict) -> dict:
        return {"chosen_input_ids": row["chosen_input_ids"], "rejected_input_ids": row["rejected_input_ids"]}

    def length(self, row: dict) -> int:
        return pair_length(row)

    def collate(self, rows: list[dict]) -> dict:
        return PairCollator(self.pad_token_id)(rows)

    def loss(self, model, batch: dict, num_items_in_batch=None):
        chosen, rejected = pair_rewards(model, batch)
        return pairwise_loss(chosen, rejected, self.margin), ranking_metrics(chosen, rejected)

    def summary(self, history: list[dict], train_rows: list[dict]) -> dict:
        val = [row for row in history if row["split"] == "val"]
        return {"train_pairs": len(train_rows), "val_accuracy_before": val[0]["accuracy"] if val else None,
                "final_val_accuracy": val[-1]["accuracy"] if val else None}
