"""``llm-finetune run / translate / rerun / compare`` as a user types them, in a scratch copy of the project:
the real CLI, kedro-mlflow with its sqlite store, a tiny random Llama, the `test` environment."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import REPO
from tests.pipelines.test_sft_e2e import scratch_project, versions

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).with_name("llm-finetune"))
LF_SFT = """\
### model
model_name_or_path: {model}
### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
### dataset
dataset: demo_alpaca
dataset_dir: lf_data
cutoff_len: 128
max_samples: 120
overwrite_cache: true
### output
output_dir: saves/tiny/lora/sft
logging_steps: 2
save_steps: 500
report_to: none
### train
per_device_train_batch_size: 4
gradient_accumulation_steps: 1
learning_rate: 5.0e-3
max_steps: 6
lr_scheduler_type: cosine
warmup_ratio: 0.1
val_size: 0.05
"""


def cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
                        "COLUMNS": "400"}
    return subprocess.run([CLI, *args], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


def runs(project: Path) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("llm_finetune")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def adapter_digest(project: Path, version: str) -> str:
    weights = project / "data/06_models/sft/adapter" / version / "adapter" / "adapter_model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lf_project(tmp_path_factory, tiny_model_dir):
    """A project holding a LLaMA-Factory YAML and its data/dataset_info.json, after `llm-finetune run` of it."""
    project = scratch_project(tmp_path_factory, "lf")
    shutil.copy(REPO / "data" / "01_raw" / "demo_instructions.json", project / "data" / "01_raw")
    shutil.copy(REPO / "data" / "01_raw" / "demo_responses.json", project / "data" / "01_raw")
    (project / "lf_data").mkdir()
    shutil.copy(REPO / "data" / "01_raw" / "demo_instructions.json", project / "lf_data" / "demo.json")
    (project / "lf_data" / "dataset_info.json").write_text(json.dumps({"demo_alpaca": {"file_name": "demo.json"}}))
    (project / "llama_lora_sft.yaml").write_text(LF_SFT.format(model=tiny_model_dir))
    result = cli(project, "run", "llama_lora_sft.yaml", "--env", "test")
    assert result.returncode == 0, result.stdout[-4000:]
    return project, result


def test_a_llamafactory_yaml_runs_as_it_is_with_its_values(lf_project):
    project, result = lf_project
    assert "lora_rank -> train.lora.r = 8" in result.stdout
    assert "warmup_ratio -> train.warmup_steps = 0.1" in result.stdout
    (run,) = runs(project)
    params = run.data.params
    assert (params["train.lora.r"], params["train.lora.alpha"], params["train.warmup_steps"]) == ("8", "16.0", "0.1")
    assert (params["train.max_steps"], params["tokenize.cutoff_len"], params["data.max_rows"]) == ("6", "128", "120")
    assert params["train.gradient_checkpointing"] == "True" and params["train.seed"] == "42"
    assert run.data.metrics["sft.train.global_steps"] == 6
    assert run.data.metrics["sft.align.datasets.demo_alpaca.rows_in"] == 120  # read through dataset_info.json
    adapter = project / "data/06_models/sft/adapter" / versions(project, "data/06_models/sft/adapter")[-1] / "adapter"
    assert json.loads((adapter / "training_params.json").read_text())["learning_rate"] == 5e-3


def test_translate_writes_the_experiment_and_a_typo_is_refused_before_anything_runs(lf_project):
    project, _ = lf_project
    done = cli(project, "translate", "llama_lora_sft.yaml", "-o", "conf/experiments/from_lf.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    experiment = yaml.safe_load((project / "conf/experiments/from_lf.yml").read_text())
    assert experiment["run"]["pipeline"] == "sft" and experiment["run"]["params"]["train"]["lora"]["r"] == 8
    (project / "typo.yaml").write_text(LF_SFT.format(model="x").replace("lora_rank", "lora_rnak"))
    before = versions(project, "data/06_models/sft/adapter")
    failed = cli(project, "run", "typo.yaml", "--env", "test")
    assert failed.returncode != 0
    assert "lora_rnak: not a LLaMA-Factory training argument this translation knows; did you mean lora_rank?" \
        in failed.stdout
    assert "Running node" not in failed.stdout and versions(project, "data/06_models/sft/adapter") == before


def test_rerun_reproduces_metrics_and_adapter_bytes_and_is_tagged_with_the_original(lf_project):
    project, _ = lf_project
    original = runs(project)[0]
    first_version = versions(project, "data/06_models/sft/adapter")[-1]
    result = cli(project, "rerun", original.info.run_id)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "reproduced: yes" in result.stdout and "sft.adapter/adapter_model.safetensors" in result.stdout
    again = [r for r in runs(project) if r.info.run_id != original.info.run_id][-1]
    assert again.data.tags["llm_finetune.reproduces"] == original.info.run_id
    assert adapter_digest(project, versions(project, "data/06_models/sft/adapter")[-1]) == \
        adapter_digest(project, first_version)
    timing = ("_per_s", "seconds", "runtime", "mfu", "tflops")
    same = {k: v for k, v in original.data.metrics.items() if not any(t in k for t in timing)}
    assert same and same == {k: again.data.metrics[k] for k in same}
    spec = json.loads(Path(mlflow.tracking.MlflowClient().download_artifacts(again.info.run_id, "run_spec.json"))
                      .read_text())
    assert spec["reproduces"] == original.info.run_id and spec["parameters"]["train"]["lora"]["r"] == 8
    assert spec["sources"]["demo_alpaca"]["sha256"] == hashlib.sha256(
        (project / "lf_data" / "demo.json").read_bytes()).hexdigest()


def test_rerun_refuses_when_the_data_changed_and_compare_names_the_differences(lf_project):
    project, _ = lf_project
    original = runs(project)[0]
    data = project / "lf_data" / "demo.json"
    kept = data.read_bytes()
    data.write_bytes(kept.replace(b"\"9\"", b"\"10\"", 1))
    try:
        refused = cli(project, "rerun", original.info.run_id)
    finally:
        data.write_bytes(kept)
    assert refused.returncode != 0
    assert "cannot rerun exactly: dataset demo_alpaca: lf_data/demo.json changed since the run (sha256" \
        in refused.stdout
    assert "Running node" not in refused.stdout
    other = cli(project, "run", "llama_lora_sft.yaml", "--env", "test", "--params", "train.learning_rate=0.001")
    assert other.returncode == 0, other.stdout[-3000:]
    latest = runs(project)[-1]
    shown = cli(project, "compare", original.info.run_id, latest.info.run_id)
    assert shown.returncode == 0, shown.stdout[-3000:]
    assert "train.learning_rate" in shown.stdout and "sft.train.final_train_loss" in shown.stdout
    assert "DIFFERENT" in shown.stdout and "reproduced: no" in shown.stdout
