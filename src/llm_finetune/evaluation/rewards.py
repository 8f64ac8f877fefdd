"""Rewards for online RL (the ``grpo`` stage): a reward is a judge.

``grpo.rewards`` lists the reward functions and their weights::

    rewards:
      - {name: exact_match, weight: 1.0}                   # 1 / 0 against the row's reference
      - {name: format, weight: 0.2, pattern: "^\\d+$"}       # 1 when the completion matches the regex
      - {name: rouge_l, weight: 0.5}                       # ROUGE-L F1 against the reference
      - {name: reward_model, weight: 1.0, path: latest}    # an `rm` version (judge.reward_model's options)
      - {name: llm_judge, weight: 1.0, failed_score: 0.0, url: ..., model: ..., api: openai}
      - {name: my_package.rewards:brevity, weight: 0.1}    # your own function, by import path

Each is the same code evaluation uses (:mod:`llm_finetune.evaluation.judging`): the reference
metrics, the reward model's scorer, the HTTP judge with its retries. A reward function takes the
completions and their records (``prompt_input``, ``reference``, ``response``, ``meta``, as the judges
read them) and returns one score per completion, or ``None`` where it could not judge (a failed or
unparsable LLM judgement, a reward model that could not score). A ``None`` is never dropped: it is
counted under ``failed`` and scored ``failed_score`` (default 0.0). :meth:`RewardSet.score` keeps
every reward's score per completion beside the weighted total.

A user's function, ``module:function``, is called as ``function(completions, records, **options)``
with the entry's other keys as options. Hand-written (no library registry) because the contract is
ours: the judges' record format and the failure bookkeeping.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llm_finetune.evaluation.judging.reference import exact_match, rouge_l

RewardFunction = Callable[..., list]
ENTRY_KEYS = ("name", "weight", "failed_score")


def _exact_match(completions: list[str], records: list[dict]) -> list[float]:
    return [float(exact_match(c, r["reference"])) for c, r in zip(completions, records)]


def _rouge_l(completions: list[str], records: list[dict]) -> list[float]:
    return [rouge_l(c, r["reference"]) for c, r in zip(completions, records)]


def _format(completions: list[str], records: list[dict], pattern: str) -> list[float]:
    compiled = re.compile(pattern)
    return [float(compiled.search(c) is not None) for c in completions]


def _reward_model(completions: list[str], records: list[dict], path: str, **options) -> list[float | None]:
    from llm_finetune.evaluation.judging.reward_judge import score

    return score(Path(path), [r["prompt_input"] for r in records], completions, **options)


def _llm_judge(completions: list[str], records: list[dict], **endpoint) -> list[float | None]:
    from llm_finetune.evaluation.judging.llm_judge import JudgeEndpoint, judge_records

    judged = judge_records([r | {"response": c} for c, r in zip(completions, records)],
                           JudgeEndpoint.from_params(endpoint))
    return [None if result.get("score") is None else result["score"] / 100 for result in judged]  # 0..100 -> 0..1


BUILT_IN: dict[str, RewardFunction] = {"exact_match": _exact_match, "rouge_l": _rouge_l, "format": _format,
                                       "reward_model": _reward_model, "llm_judge": _llm_judge}
REQUIRED = {"format": ("pattern",), "reward_model": ("path",), "llm_judge": ("url", "model", "api")}


def _resolve(name: str) -> RewardFunction:
    if name in BUILT_IN:
        return BUILT_IN[name]
    if ":" not in name:
        raise ValueError(f"grpo.rewards: unknown reward {name!r}; built in: {', '.join(BUILT_IN)}, or "
                         "'package.module:function' for your own")
    module, _, attribute = name.partition(":")
    try:
        function = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"grpo.rewards: cannot import {name!r}: {error}") from None
    if not callable(function):
        raise ValueError(f"grpo.rewards: {name!r} is not callable")
    return function


@dataclass(frozen=True)
class Reward:
    """One entry of ``grpo.rewards``: the function, its weight, options and the score of a failed judgement."""

    name: str
    function: RewardFunction
    weight: float = 1.0
    failed_score: float = 0.0
    options: dict = field(default_factory=dict)

    @classmethod
    def from_entry(cls, entry: dict) -> Reward:
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ValueError(f"grpo.rewards: each entry needs a name, got {entry!r}")
        options = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
        missing = [key for key in REQUIRED.get(entry["name"], ()) if key not in options]
        if missing:
            raise ValueError(f"grpo.rewards: {entry['name']} needs {', '.join(missing)}")
        if entry["name"] == "reward_model":  # `latest` or a folder, checked now (preflight), not mid-training
            from llm_finetune.evaluation.judging.reward_judge import resolve_reward_model

            options["path"] = str(resolve_reward_model(options["path"]))
        return cls(entry["name"], _resolve(entry["name"]), float(entry.get("weight", 1.0)),
                   float(entry.get("failed_score", 0.0)), options)


@dataclass(frozen=True)
class RewardSet:
    """The configured rewards; :meth:`score` gives the weighted total per completion and every reward's scores."""

    rewards: tuple[Reward, ...]

    @classmethod
    def from_params(cls, entries: list[dict]) -> RewardSet:
        if not entries:
            raise ValueError("grpo.rewards is empty: name at least one reward (e.g. {name: exact_match})")
        rewards = tuple(Reward.from_entry(entry) for entry in entries)
        names = [reward.name for reward in rewards]
        if len(set(names)) < len(names):
            raise ValueError(f"grpo.rewards names a reward twice: {names}")
        return cls(rewards)

    def score(self, completions: list[str], records: list[dict]) -> dict:
        """``{"total": [...], "by_reward": {name: [...]}, "failed": {name: count}}``; scores as floats, a
        failed judgement at its reward's ``failed_score``."""
        if len(completions) != len(records):
            raise ValueError(f"{len(completions)} completions but {len(records)} records")
        by_reward, failed = {}, {}
        for reward in self.rewards:
            scores = list(reward.function(completions, records, **reward.options))
            if len(scores) != len(completions):
                raise ValueError(f"reward {reward.name} returned {len(scores)} scores for {len(completions)} "
                                 "completions")
            failed[reward.name] = sum(score is None for score in scores)
            by_reward[reward.name] = [reward.failed_score if score is None else float(score) for score in scores]
        total = [sum(reward.weight * by_reward[reward.name][i] for reward in self.rewards)
                 for i in range(len(completions))]
        return {"total": total, "by_reward": by_reward, "failed": failed}
