"""End to end `kedro run --pipeline grpo --env test`: prompts from the shared data pipeline, completions
sampled and scored online by the configured rewards, held-out rewards of the start and the tuned model.

Real components throughout: the kedro CLI, the catalog, kedro-mlflow with its sqlite store, peft, and
transformers' sampling on a tiny random Llama (whose rewards are near zero: this checks the wiring,
the bookkeeping and the reproducibility, not learning; the SmolLM2 run is in README / the issue note).
"""

from __future__ import annotations

import shutil

import mlflow
import pytest

from tests.conftest import DEMO_DATA
from tests.pipelines.test_sft_e2e import kedro, latest, scratch_project

pytestmark = pytest.mark.e2e
REWARDS = ("exact_match", "rouge_l")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = scratch_project(tmp_path_factory, "grpo-project")
    shutil.copy(DEMO_DATA, root / "data" / "01_raw")
    params = {"model_registry.tiny-llama.path": str(tiny_model_dir)}
    histories = []
    for _ in range(2):
        run = kedro(root, "run", "--pipeline", "grpo", "--env", "test", params=params)
        assert run.returncode == 0, run.stdout[-4000:]
        histories.append(latest(root, "data/07_model_output/grpo/loss_history.json"))
    return root, histories


def test_grpo_runs_with_its_rewards_logged_and_reproduces(runs):
    root, (first, second) = runs
    train = [row for row in first if row["split"] == "train"]
    assert [row["step"] for row in train] == [2, 4]
    for row in first:
        assert {"reward", "reward_std", "kl", "clip_ratio", "completion_length"} <= set(row)
        assert all(f"rewards/{name}" in row and f"failed/{name}" in row for name in REWARDS)
    assert second == first  # same config and data: the same samples, rewards and losses
    metrics = latest(root, "data/08_reporting/grpo/metrics.json")
    assert metrics["test_prompts"] == 8 and set(metrics["start"]) == set(metrics["tuned"])
    assert {f"rewards/{name}" for name in REWARDS} <= set(metrics["tuned"])
    stats = latest(root, "data/08_reporting/grpo/train_prompts_stats.json")
    assert stats["prompts"] + stats["quarantined"] == stats["records_in"] > 0
    info = latest(root, "data/07_model_output/grpo/train_info.json")
    assert info["objective"] == "grpo" and info["rows_used"] == 16 and info["num_generations"] == 2


def test_mlflow_holds_the_reward_curves_and_the_held_out_rewards(runs):
    root, _ = runs
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    run = mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["start_time DESC"])[0]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_reward")] == [2, 4]
    assert "val_reward" in run.data.metrics and "train_rewards/exact_match" in run.data.metrics
    assert "grpo.tuned.reward" in run.data.metrics and "grpo.start.reward" in run.data.metrics
    assert run.data.params["grpo.train.lora.r"] == "16"


def test_a_reward_or_grpo_setting_mistake_fails_in_preflight(tiny_model_dir):
    from llm_finetune.pipelines.stages.nodes import stage_preflight

    plan = [{"name": "demo_instructions", "kind": "conversation", "max_rows": None}]
    registry = {"tiny": {"source": "local", "path": str(tiny_model_dir)}}
    tokenize = {"template": "alpaca", "cutoff_len": 256, "loss_on": "assistant", "truncation": "truncate_response",
                "packing": "none"}
    good = {"rewards": [{"name": "exact_match"}], "num_generations": 4}
    assert stage_preflight("grpo", plan, "tiny", registry, tokenize, good)["kind"] == "prompt"
    with pytest.raises(ValueError, match="unknown reward 'exact_mach'"):
        stage_preflight("grpo", plan, "tiny", registry, tokenize, good | {"rewards": [{"name": "exact_mach"}]})
    with pytest.raises(ValueError, match="num_generations must be at least 2"):
        stage_preflight("grpo", plan, "tiny", registry, tokenize, good | {"num_generations": 1})
    with pytest.raises(ValueError, match="grpo trains on prompt data"):
        stage_preflight("grpo", [plan[0] | {"kind": "preference"}], "tiny", registry, tokenize, good)
