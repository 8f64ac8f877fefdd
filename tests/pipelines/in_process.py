"""Run a registered pipeline in this process: a Kedro session on the ``test`` environment of a scratch project.

The wiring tests under ``tests/pipelines/<name>/`` use it: the real catalog (factories, versioning,
layers), the real hooks (kedro-mlflow, our tracking hook) and Kedro's ``SequentialRunner``, without a
``kedro`` subprocess. After the run every dataset the pipeline names (parameters aside) must exist in
the catalog: a node that never ran, or an output that was never saved, fails the test. The MLflow run
kedro-mlflow opened is closed afterwards, as the end of a ``kedro run`` process would.
"""

from __future__ import annotations

from pathlib import Path


def nested(params: dict) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``, as ``kedro run --params`` reads dotted keys."""
    tree: dict = {}
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def run_in_process(project: Path, pipeline: str, params: dict, monkeypatch, load_versions: dict | None = None):
    """Run ``pipeline`` on ``project`` (cwd: the project, as `kedro run` has it); returns ``(catalog, missing)``:
    the catalog after the run and the outputs of the pipeline that do not exist."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.runner import SequentialRunner

    from llm_finetune.pipeline_registry import register_pipelines

    monkeypatch.chdir(project)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="test", runtime_params=nested(params)) as session:
        session.run(pipeline_names=[pipeline], runner=SequentialRunner(), load_versions=load_versions)
        catalog = session.load_context().catalog
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    written = register_pipelines()[pipeline].all_outputs()
    missing = sorted(name for name in written if not catalog.exists(name))
    return catalog, missing


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def users_model(tmp_path_factory, tiny_model_dir: Path) -> tuple[dict, dict, Path]:
    """A copy of the tiny model as a user's own ``local`` folder, with a chat-template override (the case
    that once wrote through hard links into it): ``(params, digests before, folder)``."""
    import shutil

    folder = tmp_path_factory.mktemp("users-model") / "my-model"
    shutil.copytree(tiny_model_dir, folder)
    params = {"model_registry.tiny-llama.path": str(folder),
              "model_registry.tiny-llama.chat_template": "{{ messages[0]['content'] }}"}
    return params, digests(folder), folder
