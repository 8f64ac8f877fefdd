"""Under gradient accumulation the loss is normalised by the trained tokens of all micro-batches.

One optimizer step over the same 8 rows, as 1 micro-batch of 8 or as 8 micro-batches of 1,
must give the same gradients; rows have different numbers of trained tokens, so averaging
per-micro-batch means (the classic bug) would not.
"""

import pytest
import torch
from transformers import TrainerCallback

from llm_finetune.tokens.conversations import IGNORE_INDEX, TokenizeSettings, tokenize_records
from llm_finetune.tokens.templates import load_template
from tests.conftest import alpaca_record
from tests.conftest import train_lm as train_model

PARAMS = {"seed": 3, "precision": "fp32", "epochs": 1, "max_steps": 1, "learning_rate": 1e-3, "weight_decay": 0.0,
          "lr_scheduler": "constant", "warmup_steps": 0, "max_grad_norm": 0.0, "group_by_length": False,
          "eval_steps": 1, "logging_steps": 1, "lora": {"r": 4, "alpha": 8, "dropout": 0.0,
                                                        "target_modules": "all-linear"}}


class GradientsBeforeStep(TrainerCallback):
    def __init__(self):
        self.gradients = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def rows(tiny_tokenizer):
    records = [alpaca_record(f"Repeat the word {i} times.", " ".join(["yes"] * (1 + 5 * i))) for i in range(8)]
    tokens, _ = tokenize_records(records, TokenizeSettings(load_template("alpaca"), 256), tiny_tokenizer)
    trained = [sum(label != IGNORE_INDEX for label in row["labels"]) for row in tokens]
    assert len(set(trained)) == 8  # different token counts per row: the case that exposes bad normalisation
    return tokens


def gradients(rows, model_dir, batch_size, accumulation):
    capture = GradientsBeforeStep()
    train_model(rows, rows[:2], model_dir, PARAMS | {"batch_size": batch_size,
                                                    "gradient_accumulation_steps": accumulation},
               callbacks=[capture])
    return capture.gradients


def test_one_batch_of_eight_equals_eight_accumulated_batches_of_one(rows, tiny_model_dir):
    whole = gradients(rows, tiny_model_dir, batch_size=8, accumulation=1)
    accumulated = gradients(rows, tiny_model_dir, batch_size=1, accumulation=8)
    assert whole and whole.keys() == accumulated.keys()
    assert any(g.abs().sum() > 0 for g in whole.values())
    for name, gradient in whole.items():
        torch.testing.assert_close(accumulated[name], gradient, atol=1e-6, rtol=1e-4, msg=name)


def test_the_comparison_catches_per_micro_batch_averaging(rows, tiny_model_dir, monkeypatch):
    """With each micro-batch's mean loss / 8 (the classic bug) instead of token-count normalisation, gradients differ."""
    from llm_finetune.training.objectives import language_model as training

    whole = gradients(rows, tiny_model_dir, batch_size=8, accumulation=1)
    exact = training.trained_token_loss
    monkeypatch.setattr(training, "trained_token_loss", lambda model, inputs, num_items: exact(model, inputs) / 8)
    naive = gradients(rows, tiny_model_dir, batch_size=1, accumulation=8)
    assert any(not torch.allclose(naive[name], gradient, atol=1e-6, rtol=1e-4) for name, gradient in whole.items())
