"""`kedro viz build` builds the real graph: every pipeline, its nodes and datasets, with an acyclic layer view."""

import json

import pytest

from llm_finetune.pipeline_registry import register_pipelines
from tests.pipelines.test_sft_e2e import kedro, project  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e


LAYERS = ["raw", "intermediate", "primary", "model_input", "models", "model_output", "reporting"]


def test_viz_build_holds_every_sft_node_and_dataset_with_layers(project):  # noqa: F811
    result = kedro(project, "viz", "build", "--include-hooks")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "circular dependency detected among layers" not in result.stdout
    graph = json.loads((project / "build" / "api" / "main").read_text())
    by_type = {}
    for item in graph["nodes"]:
        by_type.setdefault(item["type"], {})[item["name"]] = item
    sft = register_pipelines()["sft"]
    assert {n.name.rsplit(".", 1)[-1] for n in sft.nodes} <= set(by_type["task"])  # viz names tasks without namespace
    datasets = {name for name in sft.datasets() if not name.startswith("params:") and name != "parameters"}
    assert datasets <= set(by_type["data"])
    layers = {by_type["data"][name]["layer"] for name in datasets}
    assert set(LAYERS) <= layers
    assert by_type["data"]["sft.adapter"]["layer"] == "models"
    registered = register_pipelines()
    assert set(registered) <= {p["id"] for p in graph["pipelines"]}
    for name, pipeline in registered.items():  # each pipeline's graph, with its layer view
        view = json.loads((project / "build" / "api" / "pipelines" / name).read_text())
        tasks = {item["name"] for item in view["nodes"] if item["type"] == "task"}
        assert {n.name.rsplit(".", 1)[-1] for n in pipeline.nodes} <= tasks, name
        assert view["layers"] and set(view["layers"]) <= set(LAYERS), name  # empty when the layers form a cycle


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
                for name in ("sft.aligned_records", "sft.align_quarantine")}
    assert {p["preview_type"] for p in previews.values()} == {"TablePreview"}
    aligned, quarantine = previews["sft.aligned_records"]["preview"], previews["sft.align_quarantine"]["preview"]
    assert len(aligned["data"]) == 20 and aligned["columns"] == ["messages", "system", "tools", "meta"]
    bad = dict(zip(quarantine["columns"], quarantine["data"][0]))
    assert (bad["row"], bad["field"], bad["reason"]) == (7, "output", "missing field")
    assert bad["file"].endswith("rows.json")
