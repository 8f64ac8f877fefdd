"""ORPO and SimPO: their formulas on known log-probs, no reference pass in the pipeline, and a short
training that raises their own reward accuracy, on the shared engine."""

from __future__ import annotations

import math

import pytest
import torch

from llm_finetune.pipelines.dpo.nodes import reference_logps, train_dpo
from llm_finetune.training.engine import fit
from llm_finetune.training.objectives.dpo import (
    ORPO_METRICS,
    PAIR_METRICS,
    LossSettings,
    PreferenceObjective,
    batch_loss,
    build_policy,
    pair_logps,
    preference_report,
    with_reference,
)
from llm_finetune.training.settings import train_settings
from tests.training.objectives.test_dpo import INFO, LORA, PARAMS, TOKENIZE, TRAIN, preference_pairs


@pytest.fixture(scope="module")
def pairs(tiny_tokenizer):
    return preference_pairs(tiny_tokenizer)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_orpo_and_simpo_follow_their_formulas_on_known_logps():
    # two pairs: summed log-probs and labelled tokens per side, chosen rows first (as a collated batch)
    logps, tokens = torch.tensor([-4.0, -9.0, -6.0, -6.0]), torch.tensor([4, 3, 3, 2])
    avg_c, avg_r = [-1.0, -3.0], [-2.0, -3.0]
    simpo, simpo_metrics = batch_loss(logps, tokens, None, LossSettings("simpo", beta=2.0, gamma=0.5))
    expected = [-_log_sigmoid(2.0 * (c - r) - 0.5) for c, r in zip(avg_c, avg_r)]
    assert simpo.item() == pytest.approx(sum(expected) / 2)
    assert simpo_metrics["rewards/chosen"].tolist() == [-2.0, -6.0]
    assert simpo_metrics["rewards/accuracies"].tolist() == [1.0, 0.0]  # the second pair is a tie
    orpo, orpo_metrics = batch_loss(logps, tokens, None, LossSettings("orpo", beta=0.25))
    log_odds = [(c - r) - (math.log(1 - math.exp(c)) - math.log(1 - math.exp(r))) for c, r in zip(avg_c, avg_r)]
    nll = (4.0 + 9.0) / (4 + 3)  # token mean over the chosen answers
    assert orpo.item() == pytest.approx(nll - 0.25 * sum(map(_log_sigmoid, log_odds)) / 2)
    assert orpo_metrics["log_odds_chosen"].tolist() == pytest.approx(log_odds)
    assert orpo_metrics["nll_loss"].mean().item() == pytest.approx(nll)


def test_settings_of_the_reference_free_losses():
    assert not LossSettings("orpo").needs_reference and LossSettings("sigmoid").needs_reference
    assert LossSettings("orpo").metric_names == PAIR_METRICS + ORPO_METRICS
    assert LossSettings.from_params({"loss_type": "simpo", "beta": 2, "gamma": 1}).gamma == 1.0
    assert LossSettings.from_params({"loss_type": "simpo", "beta": 2}).gamma == 0.5  # TRL's simpo_gamma
    with pytest.raises(ValueError, match="dpo.gamma"):
        LossSettings("simpo", gamma=-1.0)
    with pytest.raises(ValueError, match="dpo.label_smoothing"):
        LossSettings("orpo", label_smoothing=0.1)


def test_no_reference_pass_is_made_or_cached(pairs, tmp_path):
    """The reference node returns a marker without loading any model (the base model path does not exist)."""
    params = PARAMS | {"loss_type": "orpo"}
    marker = reference_logps(pairs[:8], pairs[8:12], tmp_path / "no-model-here", INFO, TOKENIZE, params,
                             tmp_path / "cache")
    assert marker["reference_free"] is True and marker["train"] is None and not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="needs reference log-probs"):
        train_dpo(pairs[:8], pairs[8:12], marker, tmp_path / "no-model-here", INFO, TOKENIZE, PARAMS,
                  tmp_path / "checkpoints")


@pytest.mark.parametrize("settings", [LossSettings("orpo", beta=1.0), LossSettings("simpo", beta=2.0, gamma=0.5)],
                         ids=["orpo", "simpo"])
def test_a_short_training_raises_the_objectives_own_reward_accuracy(tiny_model_dir, tiny_tokenizer, pairs, settings):
    train, val = pairs[:16], pairs[16:]
    pad = tiny_tokenizer.pad_token_id
    policy = build_policy(tiny_model_dir, None, LORA, "fp32")
    before = preference_report(pair_logps(policy, train, pad), None, train, settings)
    result = fit(PreferenceObjective(tiny_model_dir, None, settings, pad), with_reference(train, None),
                 with_reference(val, None), train_settings(TRAIN))
    after = preference_report(pair_logps(result.model, train, pad), None, train, settings)
    assert after["rewards/accuracies"] >= 0.9 > before["rewards/accuracies"]
    assert after["loss"] < before["loss"] - 0.05
    assert set(settings.metric_names) <= set(result.history[-1])
