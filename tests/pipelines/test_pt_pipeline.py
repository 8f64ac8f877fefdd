"""End-to-end `kedro run --pipeline pt --env test` on a small text file, in a scratch copy of the project.

Real components: the kedro CLI, the catalog, kedro-mlflow with its sqlite store, peft and the
tiny random Llama of the fixture.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from tests.conftest import REPO
from tests.pipelines.test_sft_e2e import kedro, latest, scratch_project, versions

pytestmark = pytest.mark.e2e
DOCUMENTS = 120


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A scratch project whose demo_text.jsonl holds the first 120 demo documents."""
    root = scratch_project(tmp_path_factory, "pt-project")
    raw = root / "data" / "01_raw"
    lines = (REPO / "data" / "01_raw" / "demo_text.jsonl").read_text().splitlines()[:DOCUMENTS]
    (raw / "demo_text.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def run(project, tiny_model_dir):
    result = kedro(project, "run", "--pipeline", "pt", "--env", "test",
                   params={"model_registry.tiny-llama.path": str(tiny_model_dir)})
    assert result.returncode == 0, result.stdout[-4000:]
    return result


def test_pt_reports_perplexity_before_and_after_and_saves_the_adapter(project, run):
    metrics = latest(project, "data/08_reporting/pt/metrics.json")
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    assert metrics["block_size"] == 64 and metrics["global_steps"] == 8
    assert metrics["train_documents"] > 0 and metrics["test_blocks"] > 0 and metrics["test_scored_tokens"] > 0
    before = latest(project, "data/08_reporting/pt/perplexity_before.json")
    after = latest(project, "data/08_reporting/pt/perplexity_after.json")
    assert before["scored_tokens"] == after["scored_tokens"] == metrics["test_scored_tokens"]

    stats = latest(project, "data/08_reporting/pt/block_stats.json")
    assert sum(s["documents"] for s in stats.values()) == DOCUMENTS
    for split in stats.values():
        assert split["tokens"] == split["blocks"] * 64 + split["dropped_tokens"]

    adapter = project / "data" / "06_models" / "pt" / "adapter"
    folder = adapter / versions(project, "data/06_models/pt/adapter")[-1] / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "pretraining.json", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()}
    assert versions(project, "data/05_model_input/pt/train_blocks")
    assert versions(project, "data/08_reporting/pt/loss_curve.png")


def test_pt_run_is_tracked_in_mlflow(project, run):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("llm_finetune")
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert {"pt.perplexity_before", "pt.perplexity_after", "pt.train_tokens"} <= set(tracked.data.metrics)
    assert tracked.data.params["pt.block_size"] == "64"
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id, "pt.adapter")}
    assert "pt.adapter/adapter_model.safetensors" in artifacts
    assert client.get_metric_history(tracked.info.run_id, "val_loss")
