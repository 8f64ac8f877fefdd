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
