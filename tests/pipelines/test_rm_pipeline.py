"""End-to-end `kedro run --pipeline rm --env test` in a scratch copy of the project (tiny random Llama).

A small preference file written here always runs; LLaMA-Factory's ``dpo_en_demo.json`` runs
when ../shared/data/real holds it.
"""

from __future__ import annotations

import json
import random

import mlflow
import pytest

from tests.conftest import DEMO_DATA, real_data
from tests.pipelines.test_sft_e2e import kedro, latest, project, versions  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e
POLITE = ("Thank you.", "Glad to help!", "Hope this helps.")
RUDE = ("Go away, stupid.", "Whatever, idiot.", "Stop asking me.")


@pytest.fixture(scope="module")
def preference_file(tmp_path_factory):
    """The book's preference layout (alpaca + chosen / rejected), 160 short demo rows."""
    rows = [r for r in json.loads(DEMO_DATA.read_text()) if len(r["instruction"] + r["input"] + r["output"]) < 100]
    draw = random.Random(1)
    pairs = [{"instruction": r["instruction"], "input": r["input"], "output": r["output"],
              "chosen": f"{r['output']} {draw.choice(POLITE)}", "rejected": f"{r['output']} {draw.choice(RUDE)}"}
             for r in rows[:160]]
    path = tmp_path_factory.mktemp("prefs") / "prefs.json"
    path.write_text(json.dumps(pairs))
    return path


@pytest.fixture(scope="module")
def rm_run(project, tiny_model_dir, preference_file):  # noqa: F811
    params = {"model_registry.tiny-llama.path": str(tiny_model_dir), "datasets.prefs.path": str(preference_file),
              "datasets.prefs.format": "alpaca", "datasets.prefs.ranking": "true", "rm_data.datasets": "prefs"}
    result = kedro(project, "run", "--pipeline", "rm", "--env", "test", params=params)
    assert result.returncode == 0, result.stdout[-4000:]
    return result


def test_rm_trains_evaluates_and_saves_the_reward_model(project, rm_run):  # noqa: F811
    metrics = latest(project, "data/08_reporting/rm/metrics.json")
    assert {"pairs", "accuracy", "mean_margin", "mean_chosen_reward", "mean_rejected_reward"} <= set(metrics["test"])
    assert metrics["test"]["pairs"] == len(latest(project, "data/05_model_input/rm/test_pairs.jsonl")) > 0
    assert 0 <= metrics["before_training"]["accuracy"] <= 1 and metrics["train"]["global_steps"] == 8
    folder = project / "data/06_models/rm/reward_model" / versions(project, "data/06_models/rm/reward_model")[-1]
    saved = {p.name for p in (folder / "reward_model").iterdir()}
    assert {"adapter_model.safetensors", "reward_model.json", "prompt_template.json", "tokenizer_config.json"} <= saved
    history = latest(project, "data/07_model_output/rm/loss_history.json")
    assert [row["step"] for row in history if row["split"] == "val"] == [0, 4, 8]
    assert "Completed node: rm.train" in rm_run.stdout and "Completed node: rm.evaluate" in rm_run.stdout


def test_rm_run_is_tracked_in_mlflow_with_the_reward_model_artifact(project, rm_run):  # noqa: F811
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("llm_finetune")
    run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert {"rm.test.accuracy", "rm.test.mean_margin", "rm.before_training.accuracy"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 4
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "rm.reward_model")}
    assert "rm.reward_model/adapter_model.safetensors" in artifacts
    assert run.data.tags["dataset_version.rm.reward_model"]


def test_rm_runs_on_llamafactory_dpo_en_demo(project, tiny_model_dir):  # noqa: F811
    info = real_data("dataset_info.json")
    real_data("dpo_en_demo.json")
    result = kedro(project, "run", "--pipeline", "rm", "--env", "test",
                   params={"model_registry.tiny-llama.path": str(tiny_model_dir), "rm_data.datasets": "dpo_en_demo",
                           "rm_data.dataset_info": str(info), "rm_data.max_rows": 60, "tokenize.cutoff_len": 512,
                           "rm.train.max_steps": 4, "rm.train.eval_steps": 4})
    assert result.returncode == 0, result.stdout[-4000:]
    assert latest(project, "data/01_raw/rm/dataset_plan.json")[0]["name"] == "dpo_en_demo"
    metrics = latest(project, "data/08_reporting/rm/metrics.json")
    assert metrics["test"]["pairs"] > 0 and metrics["train"]["global_steps"] == 4


def test_rm_is_registered_with_its_outputs_in_viz_layers():
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog

    from llm_finetune.pipeline_registry import register_pipelines
    from tests.conftest import REPO

    rm = register_pipelines()["rm"]
    assert {"rm.train", "rm.evaluate", "rm.tokenize_train_pairs"} <= {n.name for n in rm.nodes}
    config = OmegaConfigLoader(str(REPO / "conf"), base_env="base", default_run_env="base")
    catalog = DataCatalog.from_config(config["catalog"], credentials=config["credentials"])
    layers = {name: catalog.get(name).metadata["kedro-viz"]["layer"] for name in
              ("rm.reward_model", "rm.loss_history", "rm.metrics")}
    assert layers == {"rm.reward_model": "models", "rm.loss_history": "model_output", "rm.metrics": "reporting"}
    assert {"rm.reward_model", "rm.metrics", "base_model"} <= rm.datasets()
