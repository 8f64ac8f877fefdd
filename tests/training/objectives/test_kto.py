"""KTO: labelled rows and their KL partners, the loss on known log-probs, and a short training on the engine."""

from __future__ import annotations

import json
import math

import pytest
import torch

from llm_finetune.tokens.conversations import IGNORE_INDEX, TokenizeSettings
from llm_finetune.tokens.labelled import NO_LABEL, split_completion, tokenize_labelled, with_kl_partners
from llm_finetune.tokens.templates import load_template
from llm_finetune.training.engine import fit
from llm_finetune.training.objectives.dpo import build_policy
from llm_finetune.training.objectives.kto import (
    KtoObjective,
    KtoSettings,
    kto_loss,
    labelled_logps,
    labelled_report,
)
from llm_finetune.training.settings import train_settings
from tests.conftest import DEMO_DATA
from tests.training.objectives.test_dpo import LORA, TRAIN

SETTINGS = TokenizeSettings(load_template("alpaca"), 256)


def labelled_records(count: int = 24) -> list[dict]:
    """Demo rows as KTO rows: even rows keep their own answer (desirable), odd ones get another row's."""
    rows = json.loads(DEMO_DATA.read_text())[: count + 1]
    return [{"messages": [{"role": "user", "content": row["instruction"]},
                          {"role": "assistant", "content": row["output"] if i % 2 == 0 else "No. " + rows[i + 1]["output"]}],
             "label": i % 2 == 0, "system": None, "tools": None, "meta": {"dataset": "demo", "row": i}}
            for i, row in enumerate(rows[:count])]


def test_labelled_rows_pairs_split_in_two_and_unlabelled_rows_quarantined(tiny_tokenizer):
    pair = {"prompt": [{"role": "user", "content": "Name a bird."}], "chosen": {"role": "assistant", "content": "An owl."},
            "rejected": {"role": "assistant", "content": "A trout."}, "system": None, "tools": None, "meta": {}}
    unlabelled = labelled_records(1)[0] | {"label": None}
    rows, quarantined = tokenize_labelled([pair, unlabelled] + labelled_records(2), SETTINGS, tiny_tokenizer)
    assert [(r["label"], r["pair"]) for r in rows] == [(True, 0), (False, 0), (True, None), (False, None)]
    assert [q["reason"] for q in quarantined] == [NO_LABEL]
    prompt, completion = split_completion(rows[0])
    assert tiny_tokenizer.decode(completion).startswith("An owl.") and prompt == split_completion(rows[1])[0]
    assert all(label != IGNORE_INDEX for label in rows[0]["labels"][len(prompt):])


def test_kl_partners_rotate_by_one_within_each_group(tiny_tokenizer):
    rows, _ = tokenize_labelled(labelled_records(7), SETTINGS, tiny_tokenizer)
    with_kl = with_kl_partners(rows, 3, 256)
    completions = [split_completion(r)[1] for r in rows]
    expected_partners = [2, 0, 1, 5, 3, 4, 5]  # groups [0,1,2] [3,4,5] [6]: a lone last row takes the one before
    for row, partner in zip(with_kl, expected_partners):
        prompt = split_completion(row)[0]
        assert row["kl_input_ids"] == prompt + completions[partner]
        assert row["kl_labels"] == [IGNORE_INDEX] * len(prompt) + completions[partner]
    with pytest.raises(ValueError, match="at least 2 rows"):
        with_kl_partners(rows, 1, 256)


def test_the_kto_loss_follows_its_formula_on_known_logps():
    logps, ref = torch.tensor([-4.0, -6.0, -5.0]), torch.tensor([-5.0, -5.0, -5.0])  # logratios [1, -1, 0]
    kl_logps, ref_kl = torch.tensor([-7.0, -8.0, -6.0]), torch.tensor([-7.5, -8.5, -6.5])  # kl estimate 0.5
    labels = torch.tensor([True, False, True])
    settings = KtoSettings("kto", beta=2.0, desirable_weight=1.0, undesirable_weight=3.0)
    loss, metrics = kto_loss(logps, ref, kl_logps, ref_kl, labels, settings)
    sigma = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [1 - sigma(2.0 * (1 - 0.5)), 3.0 * (1 - sigma(2.0 * (0.5 - -1))), 1 - sigma(2.0 * (0 - 0.5))]
    assert loss.item() == pytest.approx(sum(expected) / 3)
    assert metrics["kl"].tolist() == [0.5] and metrics["rewards/chosen"].tolist() == [2.0, 0.0]
    assert metrics["rewards/accuracies"].tolist() == [1.0, 1.0, 0.0]  # logratio 0 is below the KL estimate
    assert metrics["rewards/margins"].tolist() == [pytest.approx(1.0 - -2.0)]
    negative_kl = kto_loss(logps, ref, kl_logps, ref_kl + 1.0, labels, settings)[1]["kl"]
    assert negative_kl.tolist() == [0.0]  # the estimate is clamped at zero
    apo, _ = kto_loss(logps, ref, kl_logps, ref_kl, labels, KtoSettings("apo_zero_unpaired", beta=1.0))
    assert apo.item() == pytest.approx(((1 - sigma(1)) + sigma(-1) + (1 - sigma(0))) / 3)
    with pytest.raises(ValueError, match="kto.loss_type"):
        KtoSettings("dpo")


def test_a_short_training_raises_the_accuracy_on_its_labelled_rows(tiny_model_dir, tiny_tokenizer):
    rows, _ = tokenize_labelled(labelled_records(24), SETTINGS, tiny_tokenizer)
    train, val = with_kl_partners(rows[:16], 4, 256), with_kl_partners(rows[16:], 4, 256)
    pad = tiny_tokenizer.pad_token_id
    policy = build_policy(tiny_model_dir, None, LORA, "fp32")
    reference = {name: labelled_logps(policy, part, pad, reference=True) for name, part in (("train", train),
                                                                                             ("val", val))}
    settings = KtoSettings("kto", beta=1.0)

    def with_reference(part, ref):
        return [r | {"ref_logp": a, "ref_kl_logp": b} for r, a, b in zip(part, ref["logps"], ref["kl_logps"])]

    before = labelled_report(labelled_logps(policy, train, pad), reference["train"], train, settings, 4)
    result = fit(KtoObjective(tiny_model_dir, None, settings, pad), with_reference(train, reference["train"]),
                 with_reference(val, reference["val"]), train_settings(TRAIN | {"group_by_length": False}))
    after = labelled_report(labelled_logps(result.model, train, pad), reference["train"], train, settings, 4)
    assert before["rewards/accuracies"] == 0.0 and after["rewards/accuracies"] >= 0.8
    assert after["loss"] < before["loss"] and after["rewards/margins"] > 0
    assert {"kl", "rewards/accuracies", "rewards/chosen"} <= set(result.history[-1])
    assert result.info["desirable_rows"] == 8 and result.info["final_val_kl"] is not None


def test_a_quarantined_row_names_the_record_it_came_from(tiny_tokenizer):
    """Before, a side of a pair quarantined in tokenization was numbered in the split-in-two conversations
    (pair 1's rejected side was 'row 3'), not by the record of the split it came from."""
    long = "word " * 300
    pairs = [{"prompt": [{"role": "user", "content": f"Question {i}?"}], "chosen": {"role": "assistant", "content": "Yes."},
              "rejected": {"role": "assistant", "content": long if i == 1 else "No."}, "system": None, "tools": None,
              "meta": {"dataset": "demo", "row": i}} for i in range(2)]
    settings = TokenizeSettings(load_template("alpaca"), 160, truncation="drop")
    rows, quarantined = tokenize_labelled(pairs, settings, tiny_tokenizer)
    assert [(q["row"], q["source_row"], q["reason"]) for q in quarantined] == [(1, 1, "longer than cutoff_len")]
    assert [(r["pair"], r["label"]) for r in rows] == [(0, True), (0, False), (1, True)]
