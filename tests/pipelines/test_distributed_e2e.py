"""`kedro run --env test --params "<stage>.train.distributed.processes=2"`: two gloo processes under torchrun
(sft, dpo) and under `accelerate launch` (sft).

The run is compared with a one-process run of the same global batch (per-device batch 4 x 2
processes against 8 x 1): per-step train losses within 1e-5, the saved adapters within 1e-5
(what two reduction orders of the same sums leave), ``train_info`` saying ``world_size: 2``, and
MLflow holding one run for the two-process run with one set of step metrics. Real launcher
(torchrun), real gloo all-reduce, the real catalog and kedro-mlflow's sqlite store.
"""

from __future__ import annotations

import json
import shutil

import mlflow
import pytest
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.pipelines.test_sft_e2e import kedro, scratch_project

pytestmark = pytest.mark.e2e
STAGES = {"sft": ("train", "data/07_model_output/sft", "data/06_models/sft/adapter"),
          "dpo": ("dpo.train", "data/07_model_output/dpo", "data/06_models/dpo/adapter")}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = scratch_project(tmp_path_factory, "distributed")
    for name in ("demo_instructions.json", "demo_responses.json", "demo_preferences.json"):
        shutil.copy(REPO / "data" / "01_raw" / name, root / "data" / "01_raw")
    return root


def _latest(folder) -> dict | list:
    version = sorted(p.name for p in folder.iterdir())[-1]
    return json.loads((folder / version / folder.name).read_text())


def _adapter(folder):
    version = sorted(p.name for p in folder.iterdir())[-1]
    return load_file(str(folder / version / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module", params=[("sft", "torchrun"), ("dpo", "torchrun"), ("sft", "accelerate")],
                ids=lambda p: "-".join(p))
def runs(request, project, tiny_model_dir):
    stage, launcher = request.param
    key, outputs, adapters = STAGES[stage]
    launched = {f"{key}.distributed.processes": 2, f"{key}.distributed.launcher": launcher,
                f"{key}.distributed.master_port": 29500 + len(launcher)}
    results = {"launcher": launcher}
    for processes, params in ((2, launched), (1, {f"{key}.batch_size": 8})):
        run = kedro(project, "run", "--pipeline", stage, "--env", "test",
                    params={"model_registry.tiny-llama.path": str(tiny_model_dir)} | params)
        assert run.returncode == 0, run.stdout[-4000:]
        results[processes] = {"log": run.stdout, "history": _latest(project / outputs / "loss_history.json"),
                              "info": _latest(project / outputs / "train_info.json"),
                              "adapter": _adapter(project / adapters)}
    return stage, results


def test_two_processes_train_like_one_process_on_the_same_global_batch(runs):
    stage, results = runs
    two, one = results[2], results[1]
    assert f"Training in 2 processes ({results['launcher']})" in two["log"]
    assert two["info"]["world_size"] == 2 and one["info"]["world_size"] == 1
    train_two = [(r["step"], r["loss"]) for r in two["history"] if r["split"] == "train"]
    train_one = [(r["step"], r["loss"]) for r in one["history"] if r["split"] == "train"]
    assert len(train_two) >= 4 and [s for s, _ in train_two] == [s for s, _ in train_one]
    for (step, loss_two), (_, loss_one) in zip(train_two, train_one):
        assert abs(loss_two - loss_one) < 1e-5, (stage, step, loss_two, loss_one)
    assert two["adapter"].keys() == one["adapter"].keys()
    moved = max((one["adapter"][k].float()).abs().max().item() for k in one["adapter"])
    assert moved > 1e-3  # the adapters trained
    for name, weight in one["adapter"].items():
        assert (two["adapter"][name].float() - weight.float()).abs().max().item() < 1e-5, name


def test_mlflow_holds_one_run_with_one_set_of_step_metrics(runs, project):
    stage, results = runs
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    key = STAGES[stage][0]
    launched = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                if r.data.params.get(f"{key}.distributed.processes") == "2"
                and r.data.params.get(f"{key}.distributed.launcher") == results["launcher"]]
    assert len(launched) == 1 and launched[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(launched[0].info.run_id, "train_loss")]
    assert steps and len(steps) == len(set(steps))


def test_a_two_process_run_resumes_from_its_checkpoint_and_ends_the_same(project, tiny_model_dir):
    """Checkpoints of a launched run are written by rank 0 and resumed by every rank under the same world size."""
    params = {"model_registry.tiny-llama.path": str(tiny_model_dir), "train.distributed.processes": 2,
              "train.distributed.master_port": 29521, "train.save_steps": 6, "train.keep_checkpoints": "true"}
    whole = kedro(project, "run", "--pipeline", "sft", "--env", "test", "--to-nodes", "sft.train", params=params)
    assert whole.returncode == 0, whole.stdout[-4000:]
    history = _latest(project / "data/07_model_output/sft/loss_history.json")
    adapter = _adapter(project / "data/06_models/sft/adapter")
    folders = [p for p in (project / "data/06_models/checkpoints").iterdir() if (p / "checkpoint-6").is_dir()]
    assert len(folders) == 1 and (folders[0] / "checkpoint-12").is_dir()
    shutil.rmtree(folders[0] / "checkpoint-12")  # as if the run had died after its step-6 checkpoint
    resumed = kedro(project, "run", "--pipeline", "sft", "--env", "test", "--to-nodes", "sft.train",
                    params=params | {"train.resume": "true"})
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert "Resuming training from" in resumed.stdout and "checkpoint-6" in resumed.stdout
    assert _latest(project / "data/07_model_output/sft/train_info.json")["resumed_from"] == "checkpoint-6"
    assert _latest(project / "data/07_model_output/sft/loss_history.json") == history
    for name, weight in _adapter(project / "data/06_models/sft/adapter").items():
        assert (weight.float() - adapter[name].float()).abs().max().item() < 1e-6, name
