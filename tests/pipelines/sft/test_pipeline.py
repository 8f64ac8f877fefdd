"""The ``sft`` and ``export`` pipelines in process: every dataset of data -> tokens -> train -> evaluate -> report."""

import shutil

import pytest

from tests.conftest import DEMO_DATA
from tests.pipelines.in_process import run_in_process
from tests.pipelines.test_sft_e2e import scratch_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = scratch_project(tmp_path_factory, "wiring-sft")
    shutil.copy(DEMO_DATA, root / "data" / "01_raw")
    return root


def test_sft_pipeline_writes_every_dataset(project, tiny_model_dir, monkeypatch):
    catalog, missing = run_in_process(project, "sft", {"model_registry.tiny-llama.path": str(tiny_model_dir)},
                                      monkeypatch)
    assert missing == []
    summary = catalog.load("sft.summary_metrics")
    assert {"base", "tuned", "delta", "train"} <= set(summary) and summary["train"]["global_steps"] == 12
    assert catalog.load("sft.train_info")["objective"] == "language_model"


def test_export_pipeline_merges_the_latest_sft_adapter(project, tiny_model_dir, monkeypatch):
    catalog, missing = run_in_process(project, "export", {"model_registry.tiny-llama.path": str(tiny_model_dir)},
                                      monkeypatch)
    assert missing == []
    assert (catalog.load("merged_model") / "model.safetensors").is_file()
