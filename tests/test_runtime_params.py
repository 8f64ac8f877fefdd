"""Runtime parameters (--params, an experiment file given to ``kedro run --config``) are checked against the
project's own before anything runs; a misspelt key is named with the nearest known one."""

from __future__ import annotations

import pytest
import yaml

from llm_finetune.runtime_params import unknown_keys
from tests.conftest import REPO
from tests.pipelines.in_process import run_in_process, users_model
from tests.pipelines.test_sft_e2e import scratch_project

CONFIGURED = {"data": {"datasets": ["demo"], "split": {"mode": "hash", "seed": 1}}, "judge": {"llm": None},
              "eval": {"responses": {"path": "r.json"}},
              "train": {"max_train_rows": 960}, "model_registry": {"a": {"source": "local"}}, "model": "a"}


def test_unknown_keys_are_named_with_the_nearest_known_one():
    runtime = {"data": {"split": {"mdoe": "ordered"}, "datsets": ["x"]}, "modle": "b", "zzz": 1}
    assert unknown_keys(runtime, CONFIGURED) == ["data.split.mdoe: unknown parameter; did you mean data.split.mode?",
                                                 "data.datsets: unknown parameter; did you mean data.datasets?",
                                                 "modle: unknown parameter; did you mean model?",
                                                 "zzz: unknown parameter"]


def test_open_places_accept_new_keys():
    runtime = {"model_registry": {"mine": {"source": "local", "path": "/m"}}, "train": {"learning_rate": 1e-4},
               "judge": {"llm": {"api": "ollama", "url": "http://127.0.0.1:11434"}}, "data": {"split": {"seed": 2}},
               "eval": {"responses": {"max_rows": 20, "file_type": "jsonl"}}}
    assert unknown_keys(runtime, CONFIGURED) == []


def test_the_shipped_experiment_file_names_only_known_parameters():
    """The experiment in conf/experiments/ against the real conf/base parameters."""
    from kedro.config import OmegaConfigLoader

    from llm_finetune.settings import CONFIG_LOADER_ARGS

    params = yaml.safe_load((REPO / "conf" / "experiments" / "sft_chatml.yml").read_text())["run"]["params"]
    loader = OmegaConfigLoader(conf_source=str(REPO / "conf"), env="base", **{k: v for k, v in CONFIG_LOADER_ARGS.items()
                                                                             if k != "base_env"}, base_env="base")
    assert unknown_keys(params, loader["parameters"]) == []


@pytest.mark.e2e
def test_a_misspelt_runtime_key_stops_the_run_before_any_node(tmp_path_factory, tiny_model_dir, monkeypatch):
    project = scratch_project(tmp_path_factory, "misspelt")
    params, _, _ = users_model(tmp_path_factory, tiny_model_dir)
    with pytest.raises(ValueError, match=r"tokenize.tempalte: unknown parameter; did you mean tokenize.template\?"):
        run_in_process(project, "sft", params | {"tokenize.tempalte": "chatml"}, monkeypatch)
    assert not (project / "data" / "01_raw" / "sft").exists()  # nothing was read or written: no node ran


@pytest.mark.e2e
def test_an_experiment_file_runs_with_kedros_own_config_option_and_a_typo_in_one_stops_it(tmp_path_factory,
                                                                                          tiny_model_dir):
    """`kedro run --config <experiment file>`: its params reach the run (the adapter's template is the
    experiment's), and the same file with a misspelt key fails with the key named, before any node runs."""
    import json
    import shutil

    from tests.pipelines.test_sft_e2e import kedro, versions

    project = scratch_project(tmp_path_factory, "experiment")
    shutil.copy(REPO / "data" / "01_raw" / "demo_instructions.json", project / "data" / "01_raw")
    experiment = {"run": {"pipeline": "sft", "env": "test", "params": {
        "model_registry": {"tiny-llama": {"path": str(tiny_model_dir)}},
        "tokenize": {"template": "chatml", "loss_on": "all"}, "train": {"learning_rate": 1e-3}}}}
    (project / "exp.yml").write_text(yaml.safe_dump(experiment))
    done = kedro(project, "run", "--config", "exp.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    adapter = project / "data/06_models/sft/adapter" / versions(project, "data/06_models/sft/adapter")[-1] / "adapter"
    assert json.loads((adapter / "prompt_template.json").read_text())["template"] == "chatml"
    assert json.loads((adapter / "training_params.json").read_text())["learning_rate"] == 1e-3
    experiment["run"]["params"]["tokenize"] = {"tempalte": "chatml"}
    (project / "typo.yml").write_text(yaml.safe_dump(experiment))
    failed = kedro(project, "run", "--config", "typo.yml")
    assert failed.returncode != 0 and "tokenize.tempalte: unknown parameter; did you mean tokenize.template?" in failed.stdout
    assert "Running node" not in failed.stdout and len(versions(project, "data/06_models/sft/adapter")) == 1
