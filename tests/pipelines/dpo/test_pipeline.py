"""The ``dpo`` and ``dpo_sft`` pipelines in process: reference log-probs -> DPO adapter -> held-out metrics."""

import pytest

from tests.pipelines.in_process import digests, run_in_process, users_model
from tests.pipelines.test_sft_e2e import scratch_project
from tests.training.test_numbers_unchanged import preference_file

pytestmark = pytest.mark.e2e


def test_dpo_and_dpo_sft_pipelines_write_every_dataset(tmp_path_factory, tiny_model_dir, tiny_tokenizer, monkeypatch):
    from kedro.io.core import generate_timestamp

    from tests.training.objectives.test_dpo import sft_adapter

    project = scratch_project(tmp_path_factory, "wiring-dpo")
    model_params, before, folder = users_model(tmp_path_factory, tiny_model_dir)
    params = preference_file(project, "dpo") | model_params
    catalog, missing = run_in_process(project, "dpo", params, monkeypatch)
    assert missing == [] and catalog.load("dpo.metrics")["start_from"] == "base"
    info = catalog.load("base_model_info")
    sft_adapter(tiny_model_dir, tiny_tokenizer, project / "data/06_models/sft/adapter" / generate_timestamp() / "adapter",
                info=info)
    catalog, missing = run_in_process(project, "dpo_sft", params, monkeypatch)
    assert missing == [] and catalog.load("dpo.metrics")["start_from"] == "sft"
    assert digests(folder) == before  # the user's own model folder is untouched by dpo and dpo_sft
