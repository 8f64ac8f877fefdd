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
    histories, completions = [], []
    for _ in range(2):
        run = kedro(root, "run", "--pipeline", "grpo", "--env", "test", params=params)
        assert run.returncode == 0, run.stdout[-4000:]
        histories.append(latest(root, "data/07_model_output/grpo/loss_history.json"))
        completions.append(latest(root, "data/07_model_output/grpo/completions.jsonl"))
    return root, histories, completions


def test_grpo_runs_with_its_rewards_logged_and_reproduces(runs):
    root, (first, second), (sampled, sampled_again) = runs
    train = [row for row in first if row["split"] == "train"]
    assert [row["step"] for row in train] == [2, 4]
    for row in first:
        assert {"reward", "reward_std", "kl", "clip_ratio", "completion_length"} <= set(row)
        assert all(f"rewards/{name}" in row and f"failed/{name}" in row for name in REWARDS)
    assert second == first  # same config and data: the same samples, rewards and losses
    # the first 2 prompts' completions (2 each) of each logging window, with every reward's score
    assert [row["step"] for row in sampled] == [1, 1, 1, 1, 3, 3, 3, 3] and sampled_again == sampled
    assert all({"prompt", "reference", "completion", "advantage", "rewards/exact_match"} <= set(row) for row in sampled)
    assert (root / "data/08_reporting/grpo/reward_curve.png").is_dir()
    metrics = latest(root, "data/08_reporting/grpo/metrics.json")
    assert metrics["test_prompts"] == 8 and set(metrics["start"]) == set(metrics["tuned"])
    assert {f"rewards/{name}" for name in REWARDS} <= set(metrics["tuned"])
    stats = latest(root, "data/08_reporting/grpo/train_prompts_stats.json")
    assert stats["prompts"] + stats["quarantined"] == stats["records_in"] > 0
    info = latest(root, "data/07_model_output/grpo/train_info.json")
    assert info["objective"] == "grpo" and info["rows_used"] == 16 and info["num_generations"] == 2


def test_mlflow_holds_the_reward_curves_and_the_held_out_rewards(runs):
    root, _, _ = runs
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
    with pytest.raises(ValueError, match="save_steps 3 must be a multiple of grpo.num_iterations 2"):
        stage_preflight("grpo", plan, "tiny", registry, tokenize,
                        good | {"num_iterations": 2, "train": {"save_steps": 3}})
    with pytest.raises(ValueError, match="grpo.rows 'verified' is not one of"):
        stage_preflight("grpo", plan, "tiny", registry, tokenize, good | {"rows": "verified"})
    with pytest.raises(ValueError, match="grpo trains on prompt data"):
        stage_preflight("grpo", [plan[0] | {"kind": "preference"}], "tiny", registry, tokenize, good)


@pytest.mark.llm_server
@pytest.mark.timeout(1800)
def test_grpo_with_a_real_llama_cpp_judge_as_reward_counts_its_failures(tmp_path_factory, tiny_model_dir):
    """`kedro run --pipeline grpo` whose llm_judge reward is llama.cpp's own server (xllamacpp) serving SmolLM2:
    every completion is judged over HTTP; a judgement the 135M judge leaves unparsable is counted, not dropped."""
    pytest.importorskip("xllamacpp", reason="xllamacpp is not installed (pip install -e '.[test]')")
    import httpx
    import yaml

    from tests.evaluation.judging.llamacpp_server import llamacpp_server, smollm2_gguf

    root = scratch_project(tmp_path_factory, "grpo-judge-project")
    shutil.copy(DEMO_DATA, root / "data" / "01_raw")
    with llamacpp_server(smollm2_gguf(), n_ctx=2048, n_threads=2, n_parallel=1) as base_url:
        model_id = httpx.get(f"{base_url}/v1/models", timeout=60).json()["data"][0]["id"]
        judge = {"name": "llm_judge", "weight": 1.0, "failed_score": 0.0, "api": "openai", "url": f"{base_url}/v1",
                 "model": model_id, "concurrency": 1, "timeout_s": 900, "max_retries": 1}
        overrides = yaml.safe_load((root / "conf/test/parameters_grpo.yml").read_text())
        overrides["grpo"] |= {"rewards": [{"name": "exact_match", "weight": 1.0}, judge]}
        overrides["grpo"]["eval"] = {"max_rows": 2, "max_val_rows": 2}
        overrides["grpo"]["train"] |= {"max_train_rows": 4, "max_steps": 2, "eval_steps": 2, "logging_steps": 1}
        (root / "conf/test/parameters_grpo.yml").write_text(yaml.safe_dump(overrides))
        run = kedro(root, "run", "--pipeline", "grpo", "--env", "test",
                    params={"model_registry.tiny-llama.path": str(tiny_model_dir)})
    assert run.returncode == 0, run.stdout[-4000:]
    history = latest(root, "data/07_model_output/grpo/loss_history.json")
    train = [row for row in history if row["split"] == "train"]
    assert len(train) == 2 and all("rewards/llm_judge" in row and "failed/llm_judge" in row for row in train)
    completions = latest(root, "data/07_model_output/grpo/completions.jsonl")
    assert completions and all(0 <= row["rewards/llm_judge"] <= 1 for row in completions)
    metrics = latest(root, "data/08_reporting/grpo/metrics.json")
    assert metrics["test_prompts"] == 2 and "failed/llm_judge" in metrics["tuned"]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    logged = mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["start_time DESC"])[0]
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "train_failed/llm_judge")] == [1, 2]
    assert "grpo.tuned.failed/llm_judge" in logged.data.metrics
    assert "grpo.start.failed/llm_judge" in logged.data.metrics
