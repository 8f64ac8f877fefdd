"""The ``sft`` and ``export`` pipelines in process: every dataset of data -> tokens -> train -> evaluate -> report."""

import shutil

import pytest

from tests.conftest import DEMO_DATA
from tests.pipelines.in_process import digests, run_in_process, users_model
from tests.pipelines.test_sft_e2e import scratch_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = scratch_project(tmp_path_factory, "wiring-sft")
    shutil.copy(DEMO_DATA, root / "data" / "01_raw")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_model_dir):
    return users_model(tmp_path_factory, tiny_model_dir)


def test_sft_pipeline_writes_every_dataset(project, model, monkeypatch):
    catalog, missing = run_in_process(project, "sft", model[0], monkeypatch)
    assert missing == []
    summary = catalog.load("sft.summary_metrics")
    assert {"base", "tuned", "delta", "train"} <= set(summary) and summary["train"]["global_steps"] == 12
    assert catalog.load("sft.train_info")["objective"] == "language_model"


def test_export_pipeline_merges_the_latest_sft_adapter(project, model, monkeypatch):
    catalog, missing = run_in_process(project, "export", model[0], monkeypatch)
    assert missing == ["gguf_model"]  # export.format defaults to merged: the GGUF node writes no version
    merged = catalog.load("merged_model")
    assert (merged / "model.safetensors").is_file() and (merged / "README.md").is_file()


def test_the_users_model_folder_is_byte_identical_after_sft_and_export(project, model):
    params, before, folder = model
    assert (project / "data" / "06_models" / "sft" / "adapter").is_dir()  # the runs above happened
    assert digests(folder) == before
