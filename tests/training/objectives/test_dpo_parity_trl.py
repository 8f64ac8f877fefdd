"""Parity with TRL 1.16: on one fixed tiny batch our DPO loss, rewards and log-probs equal ``trl.DPOTrainer``'s.

TRL runs its own code paths: a ``DPOTrainer`` built from a ``DPOConfig`` around the tiny Llama
with a LoRA ``peft_config``, batches made by its own collator, and its ``compute_loss`` (which
records the rewards, margins and log-probs it logs). Our side is an independent model with the
same weights, scored by :mod:`llm_finetune.training.objectives.dpo`. trl is a test-only dependency (extra ``test``).
"""

from __future__ import annotations

import pytest
import torch

from llm_finetune.tokens.conversations import IGNORE_INDEX
from llm_finetune.training.numerics import sequence_logps
from llm_finetune.training.objectives.dpo import LossSettings, batch_loss, build_policy, collate_pairs, pair_logps
from tests.training.objectives.test_dpo import LORA, perturb_lora, preference_pairs

trl = pytest.importorskip("trl", minversion="1.16")
TOLERANCE = 1e-4


def trl_example(pair: dict) -> dict:
    """TRL's tokenized form of one of our pairs: the shared prompt and each side's labelled answer."""
    start = next(i for i, label in enumerate(pair["chosen_labels"]) if label != IGNORE_INDEX)
    for side in ("chosen", "rejected"):
        assert all(label != IGNORE_INDEX for label in pair[f"{side}_labels"][start:])  # the answer is a suffix
        assert pair[f"{side}_input_ids"][:start] == pair["chosen_input_ids"][:start]
    return {"prompt_ids": pair["chosen_input_ids"][:start], "chosen_ids": pair["chosen_input_ids"][start:],
            "rejected_ids": pair["rejected_input_ids"][start:]}


def trl_values(tiny_model_dir, tokenizer, batch: list[dict], loss_type: str, beta: float, tmp_path,
               label_smoothing: float = 0.0):
    """TRL's loss and logged metrics on ``batch``, and its trained model (LoRA weights set non-zero)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from llm_finetune.models.tuning import lora_config

    config = trl.DPOConfig(output_dir=str(tmp_path / loss_type), loss_type=[loss_type], beta=beta,
                           label_smoothing=label_smoothing, bf16=False, use_cpu=True, report_to="none",
                           max_length=None, per_device_train_batch_size=len(batch))
    placeholder = Dataset.from_dict({"prompt": ["Hi"], "chosen": [" yes"], "rejected": [" no"]})
    trainer = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=config,
                             train_dataset=placeholder, processing_class=tokenizer, peft_config=lora_config(LORA))
    perturb_lora(trainer.model)
    trainer.model.eval()
    inputs = trainer.data_collator([trl_example(pair) for pair in batch])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, inputs)
        reference = trainer.compute_ref_log_probs(trainer.model, inputs)
    metrics = {name: values[-1] for name, values in trainer._metrics["eval"].items()}
    metrics |= {"ref_chosen": reference[0].tolist(), "ref_rejected": reference[1].tolist()}
    return loss.item(), metrics, trainer.model


def our_values(tiny_model_dir, tokenizer, batch: list[dict], trl_model, settings: LossSettings):
    """Our loss and the batch means of our pair metrics, on a separate model with TRL's LoRA weights."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    model = build_policy(tiny_model_dir, None, LORA, "fp32")
    set_peft_model_state_dict(model, get_peft_model_state_dict(trl_model))
    pad = tokenizer.pad_token_id
    reference = pair_logps(model, batch, pad, reference=True)
    model.eval()
    rows = collate_pairs([p | {"ref_chosen": c, "ref_rejected": r}
                          for p, c, r in zip(batch, reference["chosen"], reference["rejected"])], pad)
    with torch.no_grad():
        logps, tokens = sequence_logps(model, rows)
    loss, metrics = batch_loss(logps, tokens, rows["ref_logps"], settings)
    return loss.item(), {name: value.mean().item() for name, value in metrics.items()}, reference


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    return preference_pairs(tiny_tokenizer, count=24)[:3]  # three pairs of different lengths (padding matters)


@pytest.mark.parametrize("loss_type,beta", [("sigmoid", 0.1), ("ipo", 0.5), ("hinge", 2.0)])
def test_loss_and_reward_margins_equal_trl(tiny_model_dir, tiny_tokenizer, batch, loss_type, beta, tmp_path):
    trl_loss, trl_metrics, trl_model = trl_values(tiny_model_dir, tiny_tokenizer, batch, loss_type, beta, tmp_path)
    loss, metrics, _ = our_values(tiny_model_dir, tiny_tokenizer, batch, trl_model, LossSettings(loss_type, beta))
    assert abs(trl_metrics["rewards/margins"]) > 1e-3 and trl_loss > 0  # a batch where the policy moved
    assert loss == pytest.approx(trl_loss, abs=TOLERANCE)
    for name in ("rewards/margins", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen",
                 "logps/rejected"):
        assert metrics[name] == pytest.approx(trl_metrics[name], abs=TOLERANCE), name


def test_label_smoothed_sigmoid_equals_trl_on_single_pairs(tiny_model_dir, tiny_tokenizer, batch, tmp_path):
    """TRL 1.16's sigmoid has no label smoothing; its ``aot`` loss is conservative DPO on sorted log-ratios,
    which for a batch of one pair is exactly our label-smoothed sigmoid."""
    settings = LossSettings("sigmoid", 0.2, label_smoothing=0.15)
    for pair in batch:
        trl_loss, _, trl_model = trl_values(tiny_model_dir, tiny_tokenizer, [pair], "aot", 0.2, tmp_path, 0.15)
        loss, _, _ = our_values(tiny_model_dir, tiny_tokenizer, [pair], trl_model, settings)
        assert loss == pytest.approx(trl_loss, abs=TOLERANCE)


def test_reference_logps_equal_trls_with_the_adapter_disabled(tiny_model_dir, tiny_tokenizer, batch, tmp_path):
    _, trl_metrics, trl_model = trl_values(tiny_model_dir, tiny_tokenizer, batch, "sigmoid", 0.1, tmp_path)
    _, _, reference = our_values(tiny_model_dir, tiny_tokenizer, batch, trl_model, LossSettings())
    assert reference["chosen"] == pytest.approx(trl_metrics["ref_chosen"], abs=TOLERANCE)
    assert reference["rejected"] == pytest.approx(trl_metrics["ref_rejected"], abs=TOLERANCE)
