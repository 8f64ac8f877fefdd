"""The ``data`` pipeline in process: every dataset written, in the sft namespace."""

import shutil

import pytest

from tests.conftest import DEMO_DATA
from tests.pipelines.in_process import run_in_process
from tests.pipelines.test_sft_e2e import scratch_project

pytestmark = pytest.mark.e2e


def test_data_pipeline_writes_every_dataset(tmp_path_factory, monkeypatch):
    project = scratch_project(tmp_path_factory, "wiring-data")
    shutil.copy(DEMO_DATA, project / "data" / "01_raw")
    catalog, missing = run_in_process(project, "data", {}, monkeypatch)
    assert missing == []
    assert len(catalog.load("sft.aligned_records")) == 120 and catalog.load("sft.align_report")["total"]["rows_in"] == 120
    assert (project / "data" / "03_primary" / "sft" / "train_records.jsonl").is_dir()
