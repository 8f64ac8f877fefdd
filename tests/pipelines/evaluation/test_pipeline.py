"""The ``eval`` pipeline in process: a responses file judged and reported in the ``eval`` namespace."""

import shutil

import pytest

from tests.conftest import REPO
from tests.pipelines.in_process import run_in_process
from tests.pipelines.test_sft_e2e import scratch_project

pytestmark = pytest.mark.e2e


def test_eval_pipeline_writes_every_dataset(tmp_path_factory, monkeypatch):
    project = scratch_project(tmp_path_factory, "wiring-eval")
    shutil.copy(REPO / "data" / "01_raw" / "demo_responses.json", project / "data" / "01_raw")
    catalog, missing = run_in_process(project, "eval", {}, monkeypatch)
    assert missing == []
    judged = catalog.load("eval.file_judgments")
    assert judged and catalog.load("eval.summary_metrics")["responses"]["n"] == len(judged)
