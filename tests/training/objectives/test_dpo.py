"""DPO: loss formulas, log-probs, the reference (LoRA disabled), its cache, training, and SFT starts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llm_finetune.io import ModelBundle
from llm_finetune.models.adapters import stacked_adapter
from llm_finetune.models.loading import load_causal_lm
from llm_finetune.pipelines.dpo.nodes import reference_logps, train_dpo
from llm_finetune.tokens.conversations import IGNORE_INDEX, TokenizeSettings
from llm_finetune.tokens.pairs import tokenize_pairs
from llm_finetune.tokens.settings import saved_template
from llm_finetune.tokens.templates import load_template
from llm_finetune.training.engine import fit
from llm_finetune.training.numerics import sequence_logps
from llm_finetune.training.objectives.dpo import (
    LossSettings,
    PreferenceObjective,
    build_policy,
    pair_logps,
    pair_metrics,
    preference_loss,
    preference_report,
    with_reference,
)
from llm_finetune.training.settings import train_settings
from tests.conftest import DEMO_DATA

TOKENIZE = {"template": "alpaca", "template_dir": None, "cutoff_len": 256, "loss_on": "last_assistant",
            "truncation": "truncate_response", "packing": "none"}
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
TRAIN = {"seed": 7, "precision": "fp32", "attention": "auto", "max_train_rows": None, "epochs": 1, "max_steps": 16,
         "batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 5e-3, "weight_decay": 0.0,
         "lr_scheduler": "constant", "warmup_steps": 0, "max_grad_norm": 1.0, "group_by_length": True,
         "eval_steps": 8, "logging_steps": 4, "optimizer": "adamw_torch", "lora": LORA}
PARAMS = {"loss_type": "sigmoid", "beta": 0.1, "label_smoothing": 0.0, "reference_batch_size": 8, "train": TRAIN}
INFO = {"name": "tiny-llama", "fingerprint": "tiny"}


def preference_pairs(tokenizer, count: int = 24) -> list[dict]:
    """Pairs from the demo rows: the right answer against another row's answer."""
    rows = json.loads(DEMO_DATA.read_text())[:count]
    records = [{"prompt": [{"role": "user", "content": row["instruction"]}],
                "chosen": {"role": "assistant", "content": row["output"]},
                "rejected": {"role": "assistant", "content": "No. " + rows[(i + 1) % count]["output"]},
                "system": None, "tools": None, "meta": {"dataset": "demo", "row": i}} for i, row in enumerate(rows)]
    pairs, quarantined = tokenize_pairs(records, TokenizeSettings(load_template("alpaca"), 256), tokenizer)
    assert not quarantined
    return pairs


def perturb_lora(model, seed: int = 0, scale: float = 0.05) -> None:
    """Non-zero LoRA B weights, so the policy differs from the model with the adapter disabled."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * scale


@pytest.fixture(scope="module")
def pairs(tiny_tokenizer):
    return preference_pairs(tiny_tokenizer)


# ---- formulas ----
def test_losses_and_metrics_follow_their_formulas_on_known_logps():
    policy_c, policy_r = torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -18.0])
    ref_c, ref_r = torch.tensor([-11.0, -20.0]), torch.tensor([-11.0, -19.0])
    chosen, rejected = policy_c - ref_c, policy_r - ref_r  # [1, 0] and [-1, 1]: delta [2, -1]

    def loss(settings, **tokens):
        return preference_loss(chosen, rejected, settings, **tokens).tolist()

    nls = lambda x: -math.log(1 / (1 + math.exp(-x)))  # noqa: E731  (-log sigmoid)
    assert loss(LossSettings("sigmoid", 0.5)) == pytest.approx([nls(1.0), nls(-0.5)])
    assert loss(LossSettings("sigmoid", 0.5, 0.1)) == pytest.approx(
        [0.9 * nls(1.0) + 0.1 * nls(-1.0), 0.9 * nls(-0.5) + 0.1 * nls(0.5)])
    assert loss(LossSettings("hinge", 0.5)) == pytest.approx([0.0, 1.5])
    ipo = loss(LossSettings("ipo", 0.5), chosen_tokens=torch.tensor([2, 4]), rejected_tokens=torch.tensor([1, 2]))
    assert ipo == pytest.approx([(1 / 2 + 1 / 1 - 1) ** 2, (0 / 4 - 1 / 2 - 1) ** 2])
    metrics = pair_metrics(policy_c, policy_r, ref_c, ref_r, beta=0.5)
    assert metrics["rewards/chosen"].tolist() == [0.5, 0.0] and metrics["rewards/rejected"].tolist() == [-0.5, 0.5]
    assert metrics["rewards/accuracies"].tolist() == [1.0, 0.0] and metrics["rewards/margins"].tolist() == [1.0, -0.5]
    assert metrics["logps/chosen"].tolist() == [-10.0, -20.0]
    tie = pair_metrics(torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), 0.1)
    assert tie["rewards/accuracies"].tolist() == [0.0]  # a tie is not a win


def test_settings_are_checked():
    for bad in (dict(loss_type="kto"), dict(beta=0.0), dict(label_smoothing=0.5),
                dict(loss_type="ipo", label_smoothing=0.1)):
        with pytest.raises(ValueError, match="dpo\\."):
            LossSettings(**({"loss_type": "sigmoid", "beta": 0.1} | bad))
    with pytest.raises(ValueError, match="token counts"):
        preference_loss(torch.zeros(1), torch.zeros(1), LossSettings("ipo"))


# ---- log-probs and the reference ----
def test_sequence_logps_sum_the_labelled_token_logps_whatever_the_padding(tiny_model_dir, pairs):
    model = load_causal_lm(tiny_model_dir).eval()
    pair = pairs[0]
    ids, labels = torch.tensor([pair["chosen_input_ids"]]), torch.tensor([pair["chosen_labels"]])
    with torch.no_grad():
        logps, tokens = sequence_logps(model, {"input_ids": ids, "labels": labels})
        full = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    targets = labels[0, 1:]
    trained = targets != IGNORE_INDEX
    expected = full[trained].gather(1, targets[trained][:, None]).sum()
    assert logps.item() == pytest.approx(expected.item(), abs=1e-4) and tokens.item() == trained.sum().item()
    alone = pair_logps(model, pairs[:1], 0)
    batched = pair_logps(model, pairs[:6], 0, batch_size=6)  # padded next to longer rows
    assert batched["chosen"][0] == pytest.approx(alone["chosen"][0], abs=1e-4)
    assert batched["rejected"][0] == pytest.approx(alone["rejected"][0], abs=1e-4)


def test_the_reference_is_the_base_model_with_the_adapter_disabled(tiny_model_dir, tiny_tokenizer, pairs):
    policy = build_policy(tiny_model_dir, None, LORA, "fp32")
    pad = tiny_tokenizer.pad_token_id
    untrained = pair_logps(policy, pairs, pad)
    perturb_lora(policy)
    reference = pair_logps(policy, pairs, pad, reference=True)
    base = pair_logps(load_causal_lm(tiny_model_dir), pairs, pad)
    assert reference["chosen"] == pytest.approx(base["chosen"], abs=1e-5)
    assert reference["rejected"] == pytest.approx(base["rejected"], abs=1e-5)
    assert untrained == reference  # a fresh LoRA changes nothing: margins start at exactly 0
    moved = pair_logps(policy, pairs, pad)
    assert max(abs(a - b) for a, b in zip(moved["chosen"], base["chosen"])) > 1e-3
    assert any(p.requires_grad for p in policy.parameters())  # the adapter is enabled again


def test_reference_logps_are_reused_on_rerun_and_must_match_the_training_pairs(tiny_model_dir, pairs, tmp_path):
    args = (pairs[:8], pairs[8:12], tiny_model_dir, INFO, TOKENIZE, PARAMS, tmp_path)
    first = reference_logps(*args)
    assert first["reused"] is False and first["pairs"] == {"train": 8, "val": 4}
    cached = tmp_path / f"{first['key']}.json"
    marked = json.loads(cached.read_text())
    marked["train"]["chosen"][0] = 123.0  # a value no model computes: seen again only if read from the cache
    cached.write_text(json.dumps(marked))
    second = reference_logps(*args)
    assert second["reused"] is True and second["train"]["chosen"][0] == 123.0
    assert second["val"] == first["val"] and second["key"] == first["key"]
    other = reference_logps(pairs[:9], *args[1:])
    assert other["reused"] is False and other["key"] != first["key"]
    with pytest.raises(ValueError, match="belongs to other pairs"):
        train_dpo(pairs[:9], pairs[8:12], first, tiny_model_dir, INFO, TOKENIZE, PARAMS, tmp_path / "checkpoints")


# ---- training ----
def test_a_short_training_raises_reward_accuracy_on_its_training_pairs(tiny_model_dir, tiny_tokenizer, pairs, tmp_path):
    train, val = pairs[:16], pairs[16:]
    policy = build_policy(tiny_model_dir, None, LORA, "fp32")
    pad = tiny_tokenizer.pad_token_id
    references = {"train": pair_logps(policy, train, pad, reference=True),
                  "val": pair_logps(policy, val, pad, reference=True)}
    settings = LossSettings.from_params(PARAMS)
    before = preference_report(pair_logps(policy, train, pad), references["train"], train, settings)
    objective = PreferenceObjective(tiny_model_dir, None, settings, pad)
    result = fit(objective, with_reference(train, references["train"]), with_reference(val, references["val"]),
                 train_settings(TRAIN))
    history, info, policy = result.history, result.info, result.model
    after = preference_report(pair_logps(policy, train, pad), references["train"], train, settings)
    assert before["rewards/accuracies"] == 0.0 and before["loss"] == pytest.approx(math.log(2))
    assert after["rewards/accuracies"] >= 0.9 and after["rewards/margins"] > 0.1
    assert after["loss"] < before["loss"] - 0.05
    assert info["global_steps"] == 16 and info["final_val_reward_accuracy"] is not None
    assert [row["step"] for row in history if row["split"] == "val"] == [8, 16]
    assert {"rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"} <= set(history[-1])


# ---- starting from an SFT adapter ----
def sft_adapter(tiny_model_dir: Path, tokenizer, folder: Path, template: str = "alpaca", info: dict = INFO) -> Path:
    """A LoRA SFT adapter folder as the sft pipeline writes it (random weights, other modules and rank)."""
    from peft import get_peft_model

    from llm_finetune.models.tuning import lora_config

    model = get_peft_model(load_causal_lm(tiny_model_dir),
                           lora_config({"r": 4, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}))
    perturb_lora(model, seed=1, scale=0.2)
    files = {"prompt_template.json": saved_template(TOKENIZE | {"template": template}, tokenizer),
             "base_model.json": info, "training_params.json": {}}
    ModelBundle(model=model, tokenizer=tokenizer, files=files).write(folder)
    return folder


def test_from_sft_the_reference_is_the_sft_model_and_the_saved_adapter_stacks_both(
        tiny_model_dir, tiny_tokenizer, pairs, tmp_path):
    sft = sft_adapter(tiny_model_dir, tiny_tokenizer, tmp_path / "sft")
    pad = tiny_tokenizer.pad_token_id
    policy = build_policy(tiny_model_dir, sft, LORA, "fp32")
    perturb_lora(policy, seed=2)
    reference = pair_logps(policy, pairs, pad, reference=True)
    sft_model = pair_logps(load_causal_lm(tiny_model_dir, adapter=sft), pairs, pad)
    assert reference["chosen"] == pytest.approx(sft_model["chosen"], abs=1e-5)
    ModelBundle(model=stacked_adapter(sft, policy)).write(tmp_path / "stacked")
    config = json.loads((tmp_path / "stacked" / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 12
    stacked = pair_logps(load_causal_lm(tiny_model_dir, adapter=tmp_path / "stacked"), pairs, pad)
    expected = pair_logps(policy, pairs, pad)
    assert stacked["chosen"] == pytest.approx(expected["chosen"], abs=1e-4)
    assert stacked["rejected"] == pytest.approx(expected["rejected"], abs=1e-4)


def test_an_sft_adapter_of_another_template_or_base_is_refused(tiny_model_dir, tiny_tokenizer, pairs, tmp_path):
    sft = sft_adapter(tiny_model_dir, tiny_tokenizer, tmp_path / "sft", template="chatml")
    with pytest.raises(ValueError, match="template 'chatml'"):
        reference_logps(pairs[:4], pairs[4:6], tiny_model_dir, INFO, TOKENIZE, PARAMS, tmp_path, sft)
    with pytest.raises(ValueError, match="trained on base model tiny"):
        reference_logps(pairs[:4], pairs[4:6], tiny_model_dir, INFO | {"fingerprint": "other"}, TOKENIZE, PARAMS,
                        tmp_path, sft)
