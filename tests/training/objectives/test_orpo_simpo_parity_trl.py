"""Parity with TRL 1.16 on one fixed tiny batch: our ORPO and SimPO losses and metrics equal TRL's
experimental ``ORPOTrainer`` and ``CPOTrainer(loss_type="simpo")``.

TRL runs its own code: a trainer built from its config around the tiny Llama with a LoRA
``peft_config``, our token ids padded by its own ``DPODataCollatorWithPadding``, and its
``get_batch_loss_metrics`` (the forward, the averaged log-probs, the loss and the metrics it logs).
Our side is an independent model with the same weights, scored by
:mod:`llm_finetune.training.objectives.dpo`.

One documented difference: TRL's ORPO NLL term averages over the prompt *and* answer tokens of the
chosen rows; ours (the ORPO paper's SFT term, as LLaMA-Factory computes it) over the chosen answer
tokens only. The total loss is compared with that one term swapped; the odds-ratio term, rewards,
log-probs and log-odds are compared as they are.
"""

from __future__ import annotations

import pytest
import torch

from llm_finetune.training.numerics import sequence_logps
from llm_finetune.training.objectives.dpo import LossSettings, batch_loss, build_policy, collate_pairs
from tests.training.objectives.test_dpo import LORA, perturb_lora, preference_pairs
from tests.training.objectives.test_dpo_parity_trl import trl_example

trl = pytest.importorskip("trl", minversion="1.16")
TOLERANCE = 1e-4
COMPARED = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected")


def trl_features(pair: dict) -> dict:
    """Our pair as TRL's legacy preference features: full sequences, attention masks, answer-only labels."""
    example = trl_example(pair)
    prompt = example["prompt_ids"]
    features = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        ids = pair[f"{side}_input_ids"]
        features |= {f"{side}_input_ids": ids, f"{side}_attention_mask": [1] * len(ids),
                     f"{side}_labels": [-100] * len(prompt) + ids[len(prompt):]}
    return features


def trl_values(tiny_model_dir, tokenizer, batch: list[dict], loss_type: str, beta: float, gamma: float, tmp_path):
    """TRL's loss and metrics on ``batch``, and its model (LoRA weights set non-zero)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from llm_finetune.models.tuning import lora_config

    common = dict(output_dir=str(tmp_path / loss_type), beta=beta, bf16=False, use_cpu=True, report_to="none",
                  max_length=512, per_device_train_batch_size=len(batch), remove_unused_columns=False)
    placeholder = Dataset.from_dict({"prompt": ["Hi"], "chosen": [" yes"], "rejected": [" no"]})
    if loss_type == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer_class, config = ORPOTrainer, ORPOConfig(**common)
    else:
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        trainer_class = CPOTrainer
        config = CPOConfig(**common, loss_type="simpo", simpo_gamma=gamma, cpo_alpha=0.0)
    trainer = trainer_class(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=config,
                            train_dataset=placeholder, processing_class=tokenizer, peft_config=lora_config(LORA))
    perturb_lora(trainer.model)
    trainer.model.eval()
    inputs = trainer.data_collator([trl_features(pair) for pair in batch])
    with torch.no_grad():
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, inputs, train_eval="train")
    return float(loss), metrics, trainer.model


def our_values(tiny_model_dir, tokenizer, batch: list[dict], trl_model, settings: LossSettings):
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    model = build_policy(tiny_model_dir, None, LORA, "fp32")
    set_peft_model_state_dict(model, get_peft_model_state_dict(trl_model))
    model.eval()
    rows = collate_pairs(batch, tokenizer.pad_token_id)
    assert "ref_logps" not in rows  # reference-free: no reference log-probs anywhere
    with torch.no_grad():
        logps, tokens = sequence_logps(model, rows)
        loss, metrics = batch_loss(logps, tokens, None, settings)
    return loss.item(), {name: value.mean().item() for name, value in metrics.items()}


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    return preference_pairs(tiny_tokenizer, count=24)[:3]  # three pairs of different lengths (padding matters)


def test_orpo_matches_trl(tiny_model_dir, tiny_tokenizer, batch, tmp_path):
    settings = LossSettings("orpo", beta=0.25)
    trl_loss, trl_metrics, trl_model = trl_values(tiny_model_dir, tiny_tokenizer, batch, "orpo", 0.25, 0.0, tmp_path)
    ours, metrics = our_values(tiny_model_dir, tiny_tokenizer, batch, trl_model, settings)
    for name in COMPARED + ("log_odds_ratio", "log_odds_chosen"):
        assert metrics[name] == pytest.approx(trl_metrics[name], abs=TOLERANCE), name
    assert ours == pytest.approx(trl_loss - trl_metrics["nll_loss"] + metrics["nll_loss"], abs=TOLERANCE)
    assert metrics["nll_loss"] > 0 and trl_metrics["rewards/accuracies"] < 1  # a real batch, not a trivial one


@pytest.mark.parametrize("beta,gamma", [(2.0, 1.0), (0.1, 0.5)])
def test_simpo_matches_trl_cpo_with_the_simpo_loss(tiny_model_dir, tiny_tokenizer, batch, tmp_path, beta, gamma):
    settings = LossSettings("simpo", beta=beta, gamma=gamma)
    trl_loss, trl_metrics, trl_model = trl_values(tiny_model_dir, tiny_tokenizer, batch, "simpo", beta, gamma,
                                                  tmp_path)
    ours, metrics = our_values(tiny_model_dir, tiny_tokenizer, batch, trl_model, settings)
    assert ours == pytest.approx(trl_loss, abs=TOLERANCE)
    for name in COMPARED:
        assert metrics[name] == pytest.approx(trl_metrics[name], abs=TOLERANCE), name
