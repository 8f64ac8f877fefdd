"""The ``rm`` pipeline in process: data -> pairs -> reward model -> held-out accuracy, every dataset written."""

import pytest

from tests.pipelines.in_process import digests, run_in_process, users_model
from tests.pipelines.test_sft_e2e import scratch_project
from tests.training.test_numbers_unchanged import preference_file

pytestmark = pytest.mark.e2e


def test_rm_pipeline_writes_every_dataset(tmp_path_factory, tiny_model_dir, monkeypatch):
    project = scratch_project(tmp_path_factory, "wiring-rm")
    model_params, before, folder = users_model(tmp_path_factory, tiny_model_dir)
    params = preference_file(project, "rm") | model_params
    catalog, missing = run_in_process(project, "rm", params, monkeypatch)
    assert missing == [] and digests(folder) == before  # the user's own model folder is untouched
    metrics = catalog.load("rm.metrics")
    assert metrics["test"]["pairs"] == len(catalog.load("rm.test_pairs")) > 0
    assert [row["step"] for row in catalog.load("rm.loss_history") if row["split"] == "val"] == [0, 4, 8]
