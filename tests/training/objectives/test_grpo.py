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
    return _prompt_rows(tiny_tokenizer)


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


def _objective(model_dir, tokenizer, **settings):
    grpo = GrpoSettings(**{"beta": 0.04, "num_generations": 4, "max_completion_length": 8} | settings)
    rewards = RewardSet.from_params([{"name": REWARD}])
    return GrpoObjective(model_dir, None, grpo, rewards.score, tokenizer.pad_token_id, [tokenizer.eos_token_id],
                         tuple(r.name for r in rewards.rewards), log_every=1, log_prompts=1)


def test_later_updates_reuse_the_generation_and_clip_against_its_policy(tiny_model_dir, tiny_tokenizer, prompts):
    objective = _objective(tiny_model_dir, tiny_tokenizer, num_iterations=2, epsilon_low=0.01, epsilon_high=0.01)
    model, _, _ = objective.build_model(train_settings(SETTINGS), "fp32")
    model.train()
    batch = objective.collate(prompts[:2])
    first = objective.prepare(model, batch, 0)
    assert first["first_update"] and "old_logps" in first
    _, metrics = objective.loss(model, first)
    assert metrics["clip_ratio"].max() == 0  # the first update: the policy is the sampling policy
    with torch.no_grad():  # an update moves the policy away from the one that sampled
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.5 * torch.randn_like(parameter))
    second = objective.prepare(model, batch, 1)
    assert second["texts"] == first["texts"] and not second["first_update"]
    assert torch.equal(second["old_logps"], first["old_logps"])
    _, metrics = objective.loss(model, second)
    assert metrics["clip_ratio"].max() > 0  # the ratio to the sampling policy left the clip range
    third = objective.prepare(model, batch, 2)  # two updates done: the same prompts are sampled afresh
    assert third["first_update"] and third["texts"] != first["texts"]
    assert [row["step"] for row in objective.logged_rows()] == [1] * 4 + [3] * 4


def test_num_iterations_trains_each_generation_batch_twice(tiny_model_dir, tiny_tokenizer, prompts):
    objective = _objective(tiny_model_dir, tiny_tokenizer, num_iterations=2)
    result = fit(objective, prompts[:8], prompts[8:], train_settings(SETTINGS), settings_key="grpo.train")
    train = [row for row in result.history if row["split"] == "train"]
    assert result.info["global_steps"] == 4 and result.info["num_iterations"] == 2
    # steps 1-2 train on one generation batch, 3-4 on the next: the rewards logged per step pair up
    assert train[0]["reward"] == train[1]["reward"] and train[2]["reward"] == train[3]["reward"]
    assert train[1]["reward"] != train[2]["reward"]
    logged = result.logged_rows
    assert [row["step"] for row in logged] == [1] * 4 + [3] * 4
    assert {"prompt", "reference", "completion", "reward", "advantage", f"rewards/{REWARD}"} <= logged[0].keys()
    assert logged[0]["prompt"] in {row["prompt_input"] for row in prompts[:8]}


def crash_grpo(model_dir: str, checkpoint_dir: str, kill_at: int) -> None:
    """Entry point of the child process that is killed after the checkpoint of ``kill_at``."""
    from llm_finetune.models.loading import load_tokenizer
    from tests.training.test_engine_resume import KillAfterSave

    tokenizer = load_tokenizer(model_dir)
    rows = _prompt_rows(tokenizer)
    fit(_objective(model_dir, tokenizer, num_iterations=2), rows[:8], rows[8:], train_settings(RESUME),
        checkpoint_dir, [KillAfterSave(kill_at)], settings_key="grpo.train")


RESUME = SETTINGS | {"max_steps": 8, "save_steps": 2, "eval_steps": 4}


def _prompt_rows(tokenizer):
    rows = json.loads(DEMO_DATA.read_text())[:12]
    records = [alpaca_record(r["instruction"], r["output"], r["input"]) for r in rows]
    ids = encode_prompts(records, load_template("alpaca"), tokenizer)
    return [{"prompt_ids": i, "prompt_input": r["instruction"], "reference": r["output"], "meta": {}}
            for i, r in zip(ids, rows)]


def test_a_killed_grpo_run_resumes_to_the_same_rewards_weights_and_completions(tiny_model_dir, tiny_tokenizer,
                                                                               tmp_path):
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    rows = _prompt_rows(tiny_tokenizer)
    straight = fit(_objective(tiny_model_dir, tiny_tokenizer, num_iterations=2), rows[:8], rows[8:],
                   train_settings(RESUME), tmp_path / "straight", settings_key="grpo.train")
    crashed = tmp_path / "crashed"
    child = subprocess.run([sys.executable, "-c", "from tests.training.objectives.test_grpo import crash_grpo; "
                            f"crash_grpo({str(tiny_model_dir)!r}, {str(crashed)!r}, 4)"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    resumed = fit(_objective(tiny_model_dir, tiny_tokenizer, num_iterations=2), rows[:8], rows[8:],
                  train_settings(RESUME | {"resume": True}), crashed, settings_key="grpo.train")
    assert resumed.info["resumed_from"] == "checkpoint-4" and resumed.info["global_steps"] == 8
    assert resumed.history == straight.history
    assert resumed.logged_rows == straight.logged_rows and len({r["step"] for r in straight.logged_rows}) == 4
    trained = {n: p for n, p in straight.model.named_parameters() if p.requires_grad}
    for name, parameter in resumed.model.named_parameters():
        if parameter.requires_grad:
            assert torch.equal(parameter, trained[name]), name


def test_the_longest_sequence_counts_the_completion_sampled_after_the_prompt(tiny_model_dir, tiny_tokenizer, prompts):
    """What the training attention's choice reads: a prompt plus the longest completion it may get."""
    objective = _objective(tiny_model_dir, tiny_tokenizer, max_completion_length=200)
    longest_prompt = max(len(row["prompt_ids"]) for row in prompts)
    assert objective.longest_sequence(prompts) == longest_prompt + 200
