"""The GRPO objective on the shared engine: completions sampled and scored online, seeded by the step,
so the same config and data give the same rewards and weights; the policy moves towards the reward."""

from __future__ import annotations

import json

import pytest
import torch

from llm_finetune.evaluation.rewards import RewardSet
from llm_finetune.tokens.conversations import encode_prompts
from llm_finetune.tokens.templates import load_template
from llm_finetune.training.engine import fit
from llm_finetune.training.objectives.grpo import GrpoObjective, GrpoSettings
from llm_finetune.training.settings import train_settings
from tests.conftest import DEMO_DATA, alpaca_record

REWARD = "tests.training.objectives.test_grpo:letter_e"
SETTINGS = {"precision": "fp32", "max_steps": 4, "batch_size": 2, "learning_rate": 5e-2, "warmup_steps": 0,
            "lr_scheduler": "constant", "group_by_length": False, "eval_steps": 4, "logging_steps": 1,
            "save_steps": 0, "lora": {"r": 4, "alpha": 8}}


def letter_e(completions, records):
    """A reward any policy can move: the share of the letter e in the completion."""
    return [completion.count("e") / max(len(completion), 1) for completion in completions]


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer):
    rows = json.loads(DEMO_DATA.read_text())[:12]
    records = [alpaca_record(r["instruction"], r["output"], r["input"]) for r in rows]
    ids = encode_prompts(records, load_template("alpaca"), tiny_tokenizer)
    return [{"prompt_ids": i, "prompt_input": r["instruction"], "reference": r["output"], "meta": {}}
            for i, r in zip(ids, rows)]


def _train(model_dir, tokenizer, prompts, beta=0.04):
    settings = GrpoSettings(beta=beta, num_generations=4, max_completion_length=8)
    rewards = RewardSet.from_params([{"name": REWARD}])
    objective = GrpoObjective(model_dir, None, settings, rewards.score, tokenizer.pad_token_id,
                              [tokenizer.eos_token_id], tuple(r.name for r in rewards.rewards))
    return fit(objective, prompts[:8], prompts[8:], train_settings(SETTINGS), settings_key="grpo.train")


def test_grpo_trains_on_sampled_completions_and_reruns_bit_for_bit(tiny_model_dir, tiny_tokenizer, prompts):
    first = _train(tiny_model_dir, tiny_tokenizer, prompts)
    train = [row for row in first.history if row["split"] == "train"]
    assert len(train) == 4 and all(f"rewards/{REWARD}" in row and "kl" in row for row in train)
    assert any(row["reward_std"] > 0 for row in train)  # completions of a prompt differ: advantages are not zero
    assert [row for row in first.history if row["split"] == "val"][-1]["reward"] >= 0
    lora_b = [p for n, p in first.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # the policy moved
    assert first.info["final_train_reward"] == train[-1]["reward"]
    second = _train(tiny_model_dir, tiny_tokenizer, prompts)
    assert second.history == first.history
    for (name, a), (_, b) in zip(first.model.named_parameters(), second.model.named_parameters()):
        assert torch.equal(a, b), name


def test_the_step_seeds_the_samples(tiny_model_dir, tiny_tokenizer, prompts):
    settings = GrpoSettings(num_generations=4, max_completion_length=8)
    objective = GrpoObjective(tiny_model_dir, None, settings, RewardSet.from_params([{"name": REWARD}]).score,
                              tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id], (REWARD,))
    model, _, _ = objective.build_model(train_settings(SETTINGS), "fp32")
    batch = objective.collate(prompts[:2])
    one, again, other = (objective.prepare(model, batch, step) for step in (3, 3, 4))
    assert one["texts"] == again["texts"] and one["texts"] != other["texts"]
    assert one["completion_ids"].shape[0] == 8 and one["advantages"].view(2, 4).sum(dim=1).abs().max() < 1e-5
