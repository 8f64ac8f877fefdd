"""Parity with TRL 1.16 on fixed tiny batches: our KTO loss, rewards, log-probs and KL estimate equal
``trl.KTOTrainer``'s.

TRL runs its own code: a ``KTOTrainer`` built from a ``KTOConfig`` around the tiny Llama with a LoRA
``peft_config`` (its reference is the LoRA disabled, as ours), our token ids batched by its own
``DataCollatorForUnpairedPreference`` (prompt, completion and KL completion ids), and its loss
(the KL forward, the reference forward and the KTO loss, which records the metrics it logs). The KL
completions are the ones :func:`llm_finetune.tokens.labelled.with_kl_partners` picks, which is
TRL's own rotation by one within a batch. Our side is an independent model with the same weights.
"""

from __future__ import annotations

import pytest
import torch

from llm_finetune.tokens.conversations import TokenizeSettings
from llm_finetune.tokens.labelled import split_completion, tokenize_labelled, with_kl_partners
from llm_finetune.tokens.templates import load_template
from llm_finetune.training.numerics import sequence_logps
from llm_finetune.training.objectives.dpo import build_policy
from llm_finetune.training.objectives.kto import KtoSettings, collate_labelled, kto_loss, labelled_logps
from tests.training.objectives.test_dpo import LORA, perturb_lora
from tests.training.objectives.test_kto import labelled_records

trl = pytest.importorskip("trl", minversion="1.16")
TOLERANCE = 1e-4
COMPARED = ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "kl")


def trl_values(tiny_model_dir, tokenizer, rows: list[dict], settings: KtoSettings, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from llm_finetune.models.tuning import lora_config

    config = trl.KTOConfig(output_dir=str(tmp_path / settings.loss_type), loss_type=settings.loss_type,
                           beta=settings.beta, desirable_weight=settings.desirable_weight,
                           undesirable_weight=settings.undesirable_weight, bf16=False, use_cpu=True,
                           report_to="none", max_length=None, per_device_train_batch_size=len(rows))
    placeholder = Dataset.from_dict({"prompt": ["Hi", "Yo"], "completion": [" yes", " no"], "label": [True, False]})
    trainer = trl.KTOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=config,
                             train_dataset=placeholder, processing_class=tokenizer, peft_config=lora_config(LORA))
    perturb_lora(trainer.model)
    trainer.model.eval()
    examples = [{"prompt_ids": split_completion(r)[0], "completion_ids": split_completion(r)[1],
                 "KL_completion_ids": r["kl_input_ids"][len(split_completion(r)[0]):], "label": r["label"]}
                for r in rows]
    inputs = trainer.data_collator(examples)
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    metrics = {name: values[-1] for name, values in trainer._metrics["eval"].items()}
    return loss.item(), metrics, trainer.model


def our_values(tiny_model_dir, tokenizer, rows: list[dict], trl_model, settings: KtoSettings):
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    model = build_policy(tiny_model_dir, None, LORA, "fp32")
    set_peft_model_state_dict(model, get_peft_model_state_dict(trl_model))
    reference = labelled_logps(model, rows, tokenizer.pad_token_id, reference=True)
    model.eval()
    batch = collate_labelled([r | {"ref_logp": a, "ref_kl_logp": b}
                              for r, a, b in zip(rows, reference["logps"], reference["kl_logps"])],
                             tokenizer.pad_token_id)
    with torch.no_grad():
        logps, _ = sequence_logps(model, {"input_ids": batch["input_ids"], "labels": batch["labels"]})
        kl_logps, _ = sequence_logps(model, {"input_ids": batch["kl_input_ids"], "labels": batch["kl_labels"]})
        loss, metrics = kto_loss(logps, batch["ref_logps"], kl_logps, batch["ref_kl_logps"], batch["label"], settings)
    return loss.item(), {name: value.mean().item() for name, value in metrics.items()}


@pytest.fixture(scope="module")
def rows(tiny_tokenizer):
    records = labelled_records()[:5]  # mixed labels, different lengths (padding matters)
    tokenized, quarantined = tokenize_labelled(records, TokenizeSettings(load_template("alpaca"), 256), tiny_tokenizer)
    assert not quarantined and {r["label"] for r in tokenized} == {True, False}
    return with_kl_partners(tokenized, len(tokenized), 256)


@pytest.mark.parametrize("settings", [KtoSettings("kto", 0.1), KtoSettings("kto", 2.0, 1.0, 1.33),
                                      KtoSettings("apo_zero_unpaired", 0.5)], ids=["kto", "kto-weighted", "apo"])
def test_kto_matches_trl(tiny_model_dir, tiny_tokenizer, rows, settings, tmp_path):
    trl_loss, trl_metrics, trl_model = trl_values(tiny_model_dir, tiny_tokenizer, rows, settings, tmp_path)
    ours, metrics = our_values(tiny_model_dir, tiny_tokenizer, rows, trl_model, settings)
    assert ours == pytest.approx(trl_loss, abs=TOLERANCE)
    for name in COMPARED:
        assert metrics[name] == pytest.approx(trl_metrics[name], abs=TOLERANCE), name
    if settings.loss_type == "kto":
        assert metrics["kl"] > 0  # a real estimate: the perturbed LoRA moved the mismatched log-probs
