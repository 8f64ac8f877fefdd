"""Every pipeline's parameters resolve in the base configuration (what `make run` uses), not only in ``test``."""

import pytest
from kedro.config import OmegaConfigLoader

from llm_finetune.pipeline_registry import register_pipelines
from llm_finetune.settings import CONFIG_LOADER_ARGS
from tests.conftest import REPO


@pytest.fixture(scope="module")
def base_parameters() -> dict:
    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    return OmegaConfigLoader(str(REPO / "conf"), default_run_env="base", **args)["parameters"]


@pytest.mark.parametrize("name", sorted(register_pipelines()))
def test_every_parameter_input_exists_in_the_base_configuration(name, base_parameters):
    missing = []
    for dataset in sorted(register_pipelines()[name].inputs()):
        if not dataset.startswith("params:"):
            continue
        node = base_parameters
        for part in dataset.removeprefix("params:").split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(dataset)
                break
            node = node[part]
    assert missing == [], f"pipeline {name} reads parameters that conf/base does not define"


@pytest.mark.parametrize("where", ["train", "rm.train", "dpo.train", "pt.train"])
def test_every_stages_training_block_is_valid_and_states_only_what_differs(where, base_parameters):
    from llm_finetune.training.settings import TrainSettings, train_settings

    block = base_parameters
    for part in where.split("."):
        block = block[part]
    settings = train_settings(block, where)
    defaults = TrainSettings().as_params()
    assert block and all(settings.as_params()[key] != defaults[key] for key in block), (
        f"{where} repeats a default: {[key for key in block if settings.as_params()[key] == defaults[key]]}")
