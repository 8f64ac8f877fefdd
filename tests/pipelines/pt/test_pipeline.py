"""The ``pt`` pipeline in process: text -> blocks -> perplexity before / after, every dataset written."""

import pytest

from tests.conftest import REPO
from tests.pipelines.in_process import digests, run_in_process, users_model
from tests.pipelines.test_sft_e2e import scratch_project

pytestmark = pytest.mark.e2e


def test_pt_pipeline_writes_every_dataset(tmp_path_factory, tiny_model_dir, monkeypatch):
    project = scratch_project(tmp_path_factory, "wiring-pt")
    lines = (REPO / "data" / "01_raw" / "demo_text.jsonl").read_text().splitlines()[:120]
    (project / "data" / "01_raw" / "demo_text.jsonl").write_text("\n".join(lines) + "\n")
    model_params, before, folder = users_model(tmp_path_factory, tiny_model_dir)
    catalog, missing = run_in_process(project, "pt", model_params, monkeypatch)
    assert missing == [] and digests(folder) == before  # the user's own model folder is untouched
    metrics = catalog.load("pt.metrics")
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
