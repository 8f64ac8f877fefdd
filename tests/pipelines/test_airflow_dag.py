"""`kedro airflow create` (kedro-airflow, the real plugin and CLI) turns a pipeline into an Airflow DAG in which
the train node is a task of its own; with the project's template it goes to the GPU workers' queue.

Airflow itself is not installed here (its scheduler and workers are a deployment, not a test
dependency): the DAG file is parsed as Python and its tasks and dependencies are read from the source.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_finetune.pipeline_registry import register_pipelines
from tests.pipelines.test_sft_e2e import scratch_project

KEDRO = str(Path(sys.executable).with_name("kedro"))
TEMPLATE = "conf/airflow_templates/gpu_train_dag.j2"


def _create(project: Path, *extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    return subprocess.run([KEDRO, "airflow", "create", "--pipelines", "sft,dpo", "--env", "test", *extra],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)


def _tasks(source: str) -> tuple[dict[str, dict], set[tuple[str, str]]]:
    """``{task_id: keyword arguments of @task}`` and the ``tasks[a] >> tasks[b]`` edges of a DAG file."""
    tree = ast.parse(source)
    tasks, edges = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "task":
                    keywords = {k.arg: ast.literal_eval(k.value) for k in decorator.keywords}
                    tasks[keywords.pop("task_id")] = keywords
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
            edges.add((ast.literal_eval(node.left.slice), ast.literal_eval(node.right.slice)))
    return tasks, edges


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return scratch_project(tmp_path_factory, "airflow")


def test_the_gpu_template_sends_only_the_train_nodes_to_the_gpu_queue(project):
    created = _create(project, "-t", "dags", "-j", TEMPLATE)
    assert created.returncode == 0, created.stdout + created.stderr
    pipelines = register_pipelines()
    for stage in ("sft", "dpo"):
        source = (project / "dags" / f"llm_finetune_test_{stage}_dag.py").read_text()
        tasks, edges = _tasks(source)
        assert len(tasks) == len(pipelines[stage].nodes)  # one task per node
        assert f'dag_id="llm-finetune-test-{stage}"' in source
        on_gpu = {task_id for task_id, keywords in tasks.items() if keywords.get("queue") == "gpu"}
        assert on_gpu == {f"{stage}-train"} and tasks[f"{stage}-train"]["pool"] == "gpu"
        upstream = {a for a, b in edges if b == f"{stage}-train"}
        downstream = {b for a, b in edges if a == f"{stage}-train"}
        assert f"{stage}-prepare-base-model" in upstream and downstream  # it waits for the base model, feeds eval
        assert f'run_nodes(["{stage}.train"])' in source


def test_the_plugins_own_template_also_gives_train_a_task_of_its_own(project):
    created = _create(project, "-t", "plain_dags")
    assert created.returncode == 0, created.stdout + created.stderr
    tasks, _ = _tasks((project / "plain_dags" / "llm_finetune_test_sft_dag.py").read_text())
    assert "sft-train" in tasks and len(tasks) == len(register_pipelines()["sft"].nodes)
