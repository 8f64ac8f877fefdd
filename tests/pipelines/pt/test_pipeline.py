"""The ``pt`` pipeline in process: text -> blocks -> perplexity before / after, every dataset written."""

import pytest

from tests.conftest import REPO
from tests.pipelines.in_process import run_in_process
from tests.pipelines.test_sft_e2e import scratch_project

pytestmark = pytest.mark.e2e


def test_pt_pipeline_writes_every_dataset(tmp_path_factory, tiny_model_dir, monkeypatch):
    project = scratch_project(tmp_path_factory, "wiring-pt")
    lines = (REPO / "data" / "01_raw" / "demo_text.jsonl").read_text().splitlines()[:120]
    (project / "data" / "01_raw" / "demo_text.jsonl").write_text("\n".join(lines) + "\n")
    catalog, missing = run_in_process(project, "pt", {"model_registry.tiny-llama.path": str(tiny_model_dir)},
                                      monkeypatch)
    assert missing == []
    metrics = catalog.load("pt.metrics")
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
