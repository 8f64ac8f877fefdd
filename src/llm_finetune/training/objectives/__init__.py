"""Training objectives: what a stage trains, on the one engine (:func:`llm_finetune.training.engine.fit`).

An objective builds its model, says how long a row is (for length-grouped batches), collates
rows into a batch and computes the loss of a batch with per-example metrics. It owns no loop:
data order, precision, accumulation, evaluation, early stopping, checkpoints, throughput and
logging are the engine's. A new stage is one objective file here plus one pipeline folder.
"""

from __future__ import annotations

import torch


class Objective:
    """The interface the engine calls; subclasses fill in every method that raises here."""

    name = "objective"
    # per-example metrics the loss returns; averaged over examples into the train / val logs
    metric_names: tuple[str, ...] = ()
    # consecutive optimiser steps that train on each step's rows (GRPO's num_iterations updates per generation)
    batch_repeats: int = 1

    def build_model(self, settings, precision: str):
        """``(model, trainable parameters, total parameters)``, ready to train."""
        raise NotImplementedError

    def prepare(self, model, batch: dict, step: int) -> dict:
        """The batch the loss reads, made from the collated one outside any data-parallel wrapper (an online
        objective samples and scores completions here, seeded by the optimiser ``step``). Default: as is."""
        return batch

    def row(self, row: dict) -> dict:
        """The fields of a stored row the batch needs (the dataset keeps only these)."""
        return row

    def length(self, row: dict) -> int:
        """Tokens in a row, for length-grouped batches."""
        raise NotImplementedError

    def longest_sequence(self, rows: list[dict]) -> int:
        """Tokens of the longest sequence the model sees in a batch of these rows (the training attention's
        choice depends on it); an objective that lengthens its rows in :meth:`prepare` adds that much."""
        return max((self.length(row) for row in rows), default=0)

    def collate(self, rows: list[dict]) -> dict:
        raise NotImplementedError

    def loss(self, model, batch: dict, num_items_in_batch=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch loss and per-example metrics (tensors of one value per example)."""
        raise NotImplementedError

    def scaled_for_accumulation(self, model) -> bool:
        """True when :meth:`loss` divides by ``num_items_in_batch`` (the trained tokens of the whole
        accumulated batch); False for a per-batch mean, which the engine divides by the accumulation steps."""
        return False

    def flops_per_token(self, total_parameters: int, settings) -> float:
        """Training FLOPs per input token: forward 2N, backward 2N (LoRA: no weight gradients) or 4N (full)."""
        return (6 if settings.method == "full" else 4) * total_parameters

    def logged_rows(self) -> list[dict]:
        """Rows the objective wrote down while training (GRPO: sampled completions with their rewards), which
        the engine keeps in checkpoints and returns in :class:`~llm_finetune.training.engine.FitResult`."""
        return []

    def restore_logged_rows(self, rows: list[dict]) -> None:
        """Take back :meth:`logged_rows` from the checkpoint a run resumes from."""

    def summary(self, history: list[dict], train_rows: list[dict]) -> dict:
        """Objective-specific figures for ``train_info``."""
        return {}
