"""The reward registry of the grpo stage: built-in rewards are the evaluation judges, weights combine,
a failed judgement is counted and scored as configured, a user's function loads by import path.

The LLM judge reward runs against a local HTTP server on 127.0.0.1 that speaks the OpenAI-compatible
protocol (tests/evaluation/judging/fake_servers.py); the real llama.cpp server is the judge tests' job.
"""

from __future__ import annotations

import pytest

from llm_finetune.evaluation.rewards import RewardSet
from tests.evaluation.judging.fake_servers import FakeJudge, serve

RECORDS = [{"prompt_input": "What is 2 + 2?", "reference": "4", "meta": {"verifiable": True}},
           {"prompt_input": "Capital of France?", "reference": "Paris", "meta": {"verifiable": True}},
           {"prompt_input": "Name a colour.", "reference": "blue", "meta": {}}]
COMPLETIONS = ["4", "It is Lyon.", "Blue."]


def brevity(completions, records, limit=3):
    """A user's reward: 1 for at most ``limit`` words, else nothing to say (None)."""
    return [1.0 if len(c.split()) <= limit else None for c in completions]


def test_built_in_rewards_are_the_judges_metrics_and_their_weights_combine():
    rewards = RewardSet.from_params([{"name": "exact_match", "weight": 1.0}, {"name": "rouge_l", "weight": 0.5},
                                     {"name": "format", "weight": 0.25, "pattern": r"^\d+$"}])
    scored = rewards.score(COMPLETIONS, RECORDS)
    assert scored["by_reward"]["exact_match"] == [1.0, 0.0, 1.0]  # "Blue." normalises to "blue"
    assert scored["by_reward"]["format"] == [1.0, 0.0, 0.0]
    assert scored["by_reward"]["rouge_l"][0] == 1.0 and scored["by_reward"]["rouge_l"][1] == 0.0
    assert scored["total"] == pytest.approx([1.0 + 0.5 + 0.25, 0.0, 1.0 + 0.5 * scored["by_reward"]["rouge_l"][2]])
    assert scored["failed"] == {"exact_match": 0, "rouge_l": 0, "format": 0}


def test_a_users_function_by_import_path_and_a_failed_score_counted_not_dropped():
    rewards = RewardSet.from_params([{"name": "tests.evaluation.test_rewards:brevity", "weight": 2.0,
                                      "failed_score": -1.0, "limit": 1}])
    scored = rewards.score(COMPLETIONS, RECORDS)
    assert scored["by_reward"]["tests.evaluation.test_rewards:brevity"] == [1.0, -1.0, 1.0]
    assert scored["total"] == [2.0, -2.0, 2.0] and scored["failed"] == {"tests.evaluation.test_rewards:brevity": 1}


def test_the_llm_judge_reward_scores_on_0_to_1_and_keeps_its_failures():
    fake = FakeJudge(answer="I'd rate it 80 out of 100", fail_if=lambda prompt: "Lyon" in prompt)
    with serve(fake.openai) as base:
        rewards = RewardSet.from_params([{"name": "llm_judge", "failed_score": 0.0, "url": f"{base}/v1",
                                          "model": "judge-model", "api": "openai", "max_retries": 0,
                                          "backoff_s": 0.01, "timeout_s": 10}])
        scored = rewards.score(COMPLETIONS, RECORDS)
    assert scored["by_reward"]["llm_judge"] == [0.8, 0.0, 0.8]
    assert scored["failed"] == {"llm_judge": 1}
    assert len(fake.chat_requests) == 3


@pytest.mark.parametrize("entries, message", [
    ([], "grpo.rewards is empty"),
    ([{"name": "exact_mach"}], "unknown reward 'exact_mach'; built in: exact_match"),
    ([{"name": "format"}], "format needs pattern"),
    ([{"name": "llm_judge", "url": "http://x"}], "llm_judge needs model, api"),
    ([{"name": "exact_match"}, {"name": "exact_match"}], "names a reward twice"),
    ([{"name": "tests.evaluation.test_rewards:missing"}], "cannot import"),
    ([{"name": "tests.evaluation.test_rewards:RECORDS"}], "is not callable"),
    ([{"name": "reward_model", "path": "no/such/folder"}], "not a reward model folder"),
])
def test_configuration_mistakes_are_named(entries, message):
    with pytest.raises(ValueError, match=message):
        RewardSet.from_params(entries)
