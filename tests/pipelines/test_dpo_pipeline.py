"""End to end `kedro run --pipeline dpo` / `dpo_sft --env test` on a small preference file, tiny Llama.

Real components throughout: the kedro CLI, the catalog, kedro-mlflow with its sqlite store, peft.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from tests.conftest import DEMO_DATA
from tests.pipelines.test_sft_e2e import kedro, latest, scratch_project, versions

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A scratch project with the demo data and 80 preference rows (the right answer against another's)."""
    root = scratch_project(tmp_path_factory, "dpo-project")
    raw = root / "data" / "01_raw"
    shutil.copy(DEMO_DATA, raw)
    rows = json.loads(DEMO_DATA.read_text())[:80]
    pairs = [{"instruction": row["instruction"], "input": row["input"], "output": row["output"],
              "chosen": row["output"], "rejected": "No. " + rows[(i + 7) % len(rows)]["output"]}
             for i, row in enumerate(rows)]
    (raw / "prefs.json").write_text(json.dumps(pairs))
    return root


def params(project: Path, tiny_model_dir: Path) -> dict:
    return {"model_registry.tiny-llama.path": str(tiny_model_dir),
            "datasets.prefs.path": str(project / "data/01_raw/prefs.json"),
            "datasets.prefs.format": "alpaca", "datasets.prefs.ranking": "true", "dpo_data.datasets": "prefs",
            "dpo_data.split.mode": "ordered"}  # 68 / 4 / 8 pairs


@pytest.fixture(scope="module")
def base_runs(project, tiny_model_dir):
    first = kedro(project, "run", "--pipeline", "dpo", "--env", "test", params=params(project, tiny_model_dir))
    assert first.returncode == 0, first.stdout[-4000:]
    metrics = latest(project, "data/08_reporting/dpo/metrics.json")
    second = kedro(project, "run", "--pipeline", "dpo", "--env", "test", params=params(project, tiny_model_dir))
    assert second.returncode == 0, second.stdout[-4000:]
    return first, second, metrics, latest(project, "data/08_reporting/dpo/metrics.json")


def test_dpo_trains_an_adapter_and_reports_held_out_reward_accuracy(project, base_runs):
    metrics = base_runs[2]
    adapter = project / "data/06_models/dpo/adapter" / versions(project, "data/06_models/dpo/adapter")[-1] / "adapter"
    assert {"adapter_model.safetensors", "adapter_config.json", "prompt_template.json", "tokenizer_config.json",
            "training_params.json", "base_model.json", "train_info.json"} <= {p.name for p in adapter.iterdir()}
    assert metrics["start_from"] == "base" and metrics["test_pairs"] > 0
    assert metrics["start"]["rewards/accuracies"] == 0.0  # the base against itself: every pair a tie
    assert metrics["tuned"]["rewards/accuracies"] > 0.5 and metrics["tuned"] == metrics["tuned_vs_start"]
    assert metrics["train"]["global_steps"] == 8 and metrics["train"]["train_pairs"] == 48
    history = latest(project, "data/07_model_output/dpo/loss_history.json")
    assert {row["split"] for row in history} == {"train", "val"} and "rewards/margins" in history[-1]


def test_a_rerun_reuses_the_reference_logps_and_gives_the_same_numbers(project, base_runs):
    first, second, metrics_1, metrics_2 = base_runs
    assert "Reusing reference log-probs" not in first.stdout and "Reusing reference log-probs" in second.stdout
    runs = versions(project, "data/05_model_input/dpo/reference_logps.json")
    assert len(runs) == 2
    saved = [json.loads((project / "data/05_model_input/dpo/reference_logps.json" / v / "reference_logps.json")
                        .read_text()) for v in runs]
    assert [s["reused"] for s in saved] == [False, True] and saved[0]["train"] == saved[1]["train"]
    for part in ("start", "tuned", "tuned_vs_start"):
        assert metrics_1[part] == metrics_2[part]
    assert metrics_1["train"]["final_train_loss"] == metrics_2["train"]["final_train_loss"]


def test_mlflow_holds_the_dpo_metrics_curves_and_adapter(project, base_runs):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("llm_finetune").experiment_id])
    assert len(runs) >= 2
    run = runs[-1]
    assert run.data.params["dpo.loss_type"] == "sigmoid" and run.data.params["dpo.beta"] == "0.1"
    assert "dpo.tuned.rewards/accuracies" in run.data.metrics and "dpo.start.rewards/accuracies" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 4
    assert len(client.get_metric_history(run.info.run_id, "val_rewards/accuracies")) == 2
    assert "dpo.adapter/adapter_model.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id,
                                                                                             "dpo.adapter")}


def test_dpo_sft_starts_from_the_latest_sft_adapter(project, tiny_model_dir, tiny_tokenizer, base_runs):
    """A LoRA SFT adapter registered as the newest ``sft.adapter`` version, as `kedro run --pipeline sft` leaves it."""
    from kedro.io.core import generate_timestamp

    from tests.training.objectives.test_dpo import sft_adapter

    version = generate_timestamp()
    folder = project / "data/06_models/sft/adapter" / version / "adapter"
    sft_adapter(tiny_model_dir, tiny_tokenizer, folder, info=latest(project, "data/06_models/base_model_info.json"))
    result = kedro(project, "run", "--pipeline", "dpo_sft", "--env", "test", params=params(project, tiny_model_dir))
    assert result.returncode == 0, result.stdout[-4000:]
    metrics = latest(project, "data/08_reporting/dpo/metrics.json")
    assert metrics["start_from"] == "sft" and metrics["start"]["rewards/accuracies"] > 0.0
    assert metrics["tuned_vs_start"] != metrics["tuned"]
    assert "Reusing reference log-probs" not in result.stdout  # another start model: another key
    info = latest(project, "data/07_model_output/dpo/train_info.json")
    assert info["start_from"] == "sft" and f"/{version}/adapter" in info["sft_adapter"]
