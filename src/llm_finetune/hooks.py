"""MLflow tracking beyond what kedro-mlflow logs (it logs parameters and opens the run).

Per-step training metrics are the engine's (:class:`llm_finetune.training.callbacks.MlflowSteps`).
:class:`TrackingHook` logs, after each dataset save: model folders (the adapter) as artifacts,
figures as images, tables as CSV, reports as markdown / HTML, and numeric metrics dicts as
metrics; once per run the git commit and package versions as tags; and the version of every
versioned dataset read or written as a ``dataset_version.<name>`` tag.

kedro-mlflow's ``MlflowArtifactDataset`` cannot wrap a versioned dataset on kedro 1.7
(``VersionAlreadyExistsError``), hence a hook.
"""

from __future__ import annotations

import logging
from numbers import Number

import mlflow
from kedro.framework.hooks import hook_impl

from llm_finetune.provenance import git_commit, package_versions

logger = logging.getLogger(__name__)


def flatten_metrics(data: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``a.b.c`` keys (bools and None are skipped)."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten_metrics(value, f"{name}.")
        elif isinstance(value, Number) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


class TrackingHook:
    """Send artifacts, figures and metrics to the active MLflow run as datasets are saved.

    Args:
        artifact_folders: datasets whose saved folder is logged as an artifact.
        metric_datasets: dataset name -> metric-name prefix, for datasets holding (nested)
            dicts of numbers, e.g. ``{"summary_metrics": "", "align_report": "align."}``.
        text_artifacts: dataset name -> artifact file name, for datasets holding text
            (markdown reports, HTML pages).
    DataFrames are logged as ``tables/<name>.csv`` and figures as ``<name>.png``.
    """

    def __init__(self, artifact_folders: tuple[str, ...] = (), metric_datasets: dict[str, str] | None = None,
                 text_artifacts: dict[str, str] | None = None):
        self.artifact_folders = set(artifact_folders)
        self.text_artifacts = dict(text_artifacts or {})
        self.metric_datasets = dict(metric_datasets or {})
        self._catalog = None
        self._tagged = False

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog
        self._tagged = False

    @hook_impl
    def before_node_run(self, node) -> None:
        if self._tagged or mlflow.active_run() is None:
            return
        tags = {f"version.{k}": v for k, v in package_versions().items()}
        commit = git_commit()
        if commit:
            tags["git_commit"] = commit
        mlflow.set_tags(tags)
        self._tagged = True

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data) -> None:
        """Tag the run with the version of every versioned dataset a node read."""
        self._tag_version(dataset_name, "resolve_load_version")

    def _tag_version(self, dataset_name: str, resolver: str) -> None:
        if mlflow.active_run() is None or self._catalog is None:
            return
        dataset = self._catalog.get(dataset_name)
        version = getattr(dataset, resolver, lambda: None)() if dataset is not None else None
        if version:
            mlflow.set_tag(f"dataset_version.{dataset_name}", version)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data) -> None:
        self._tag_version(dataset_name, "resolve_save_version")
        if mlflow.active_run() is None:
            return
        if dataset_name in self.artifact_folders:
            folder = getattr(self._catalog.get(dataset_name), "last_saved_path", None)
            if folder is not None:
                mlflow.log_artifacts(str(folder), artifact_path=dataset_name)
                logger.info("Logged %s (%s) to MLflow", dataset_name, folder)
        if dataset_name in self.metric_datasets and isinstance(data, dict):
            mlflow.log_metrics(flatten_metrics(data, self.metric_datasets[dataset_name]))
        if type(data).__name__ == "Figure":
            mlflow.log_figure(data, f"{dataset_name}.png")
        elif type(data).__name__ == "DataFrame":
            mlflow.log_text(data.to_csv(index=False), f"tables/{dataset_name}.csv")
        elif isinstance(data, str) and dataset_name in self.text_artifacts:
            mlflow.log_text(data, self.text_artifacts[dataset_name])
