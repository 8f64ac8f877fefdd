"""`kedro viz build` builds the real graph: every sft node and dataset, with layers."""

import json

import pytest

from llm_finetune.pipeline_registry import register_pipelines
from tests.pipelines.test_sft_e2e import kedro, project  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e


def test_viz_build_holds_every_sft_node_and_dataset_with_layers(project):  # noqa: F811
    result = kedro(project, "viz", "build", "--include-hooks")
    assert result.returncode == 0, result.stdout[-3000:]
    graph = json.loads((project / "build" / "api" / "main").read_text())
    by_type = {}
    for item in graph["nodes"]:
        by_type.setdefault(item["type"], {})[item["name"]] = item
    sft = register_pipelines()["sft"]
    assert {n.name for n in sft.nodes} <= set(by_type["task"])
    datasets = {name for name in sft.datasets() if not name.startswith("params:") and name != "parameters"}
    assert datasets <= set(by_type["data"])
    layers = {by_type["data"][name]["layer"] for name in datasets}
    assert {"raw", "intermediate", "primary", "model_input", "models", "model_output", "reporting"} <= layers
    assert by_type["data"]["adapter"]["layer"] == "models"
    assert "sft" in {p["id"] for p in graph["pipelines"]}


def test_aligned_and_quarantined_rows_preview_as_tables(project, tmp_path):  # noqa: F811
    rows = [{"instruction": f"Say {i}", "input": "", "output": str(i)} for i in range(100)]
    rows.insert(7, {"instruction": "No answer here", "input": ""})
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    run = kedro(project, "run", "--pipeline", "data", "--env", "test",
                params={"datasets.mine.path": str(tmp_path / "rows.json"), "data.datasets": "mine"})
    assert run.returncode == 0, run.stdout[-3000:]
    result = kedro(project, "viz", "build", "--include-previews")
    assert result.returncode == 0, result.stdout[-3000:]
    graph = json.loads((project / "build" / "api" / "main").read_text())
    ids = {item["name"]: item["id"] for item in graph["nodes"] if item["type"] == "data"}
    previews = {name: json.loads((project / "build" / "api" / "nodes" / ids[name]).read_text())
                for name in ("aligned_records", "align_quarantine")}
    assert {p["preview_type"] for p in previews.values()} == {"TablePreview"}
    aligned, quarantine = previews["aligned_records"]["preview"], previews["align_quarantine"]["preview"]
    assert len(aligned["data"]) == 20 and aligned["columns"] == ["messages", "system", "tools", "meta"]
    bad = dict(zip(quarantine["columns"], quarantine["data"][0]))
    assert (bad["row"], bad["field"], bad["reason"]) == (7, "output", "missing field")
    assert bad["file"].endswith("rows.json")
