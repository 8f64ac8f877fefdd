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

from llm_finetune.provenance import flat_leaves, git_commit, package_versions, url_secrets
from llm_finetune.runtime_params import check_runtime_params

logger = logging.getLogger(__name__)


def flatten_metrics(data: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``a.b.c`` keys (bools and None are skipped)."""
    return {name: float(value) for name, value in flat_leaves(data, prefix).items()
            if isinstance(value, Number) and not isinstance(value, bool)}


class ParameterCheckHook:
    """Check a run's parameters when its context is created, before any node runs or anything is logged."""

    @hook_impl
    def after_context_created(self, context) -> None:
        """Refuse unknown runtime parameters (:mod:`llm_finetune.runtime_params`) and URLs with a password
        or token in them: kedro-mlflow logs every parameter and the preflight report is stored, so a key
        inside a URL would reach both. Keys belong in ``conf/local/credentials.yml`` or an environment variable.
        """
        check_runtime_params(context.config_loader)
        found = url_secrets(context.params)
        if found:
            raise ValueError("parameters hold URLs with credentials in them (they would be logged to MLflow): "
                             + "; ".join(found) + ". Put the key in conf/local/credentials.yml (judge_api.api_key) "
                             "or an environment variable (judge.llm.api_key_env), and drop it from the URL.")


class TrackingHook:
    """Send artifacts, figures and metrics to the active MLflow run as datasets are saved.

    What to log comes from each catalog entry's ``metadata.tracking`` (see ``conf/base/catalog/shared.yml``):
    ``metrics: <prefix>`` logs a dict's numeric leaves as ``<prefix><a.b.c>``, ``artifact: <path>`` the
    saved folder under that artifact path, ``text: <file>`` a string as that artifact file. Factories
    resolve the prefix per stage (``{stage}.align.`` -> ``rm.align.``), so no dataset name is written in
    Python. DataFrames are logged as ``tables/<name>.csv`` and figures as ``<name>.png`` without metadata.
    """

    def __init__(self):
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

    def _dataset(self, dataset_name: str):
        return self._catalog.get(dataset_name) if self._catalog is not None else None

    def _tag_version(self, dataset_name: str, resolver: str) -> None:
        if mlflow.active_run() is None:
            return
        dataset = self._dataset(dataset_name)
        version = getattr(dataset, resolver, lambda: None)() if dataset is not None else None
        if version:
            mlflow.set_tag(f"dataset_version.{dataset_name}", version)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data) -> None:
        self._tag_version(dataset_name, "resolve_save_version")
        if mlflow.active_run() is None:
            return
        dataset = self._dataset(dataset_name)
        tracking = (getattr(dataset, "metadata", None) or {}).get("tracking") or {}
        if "artifact" in tracking:
            folder = getattr(dataset, "last_saved_path", None)
            if folder is not None:
                mlflow.log_artifacts(str(folder), artifact_path=tracking["artifact"])
                logger.info("Logged %s (%s) to MLflow", dataset_name, folder)
        if "metrics" in tracking and isinstance(data, dict):
            mlflow.log_metrics(flatten_metrics(data, tracking["metrics"]))
        if type(data).__name__ == "Figure":
            mlflow.log_figure(data, f"{dataset_name}.png")
        elif type(data).__name__ == "DataFrame":
            mlflow.log_text(data.to_csv(index=False), f"tables/{dataset_name}.csv")
        elif isinstance(data, str) and "text" in tracking:
            mlflow.log_text(data, tracking["text"])
