"""MLflow tracking beyond what kedro-mlflow logs (it logs parameters and opens the run).

Per-step training metrics are the engine's (:class:`llm_finetune.training.callbacks.MlflowSteps`).
:class:`TrackingHook` logs, after each dataset save: model folders (the adapter) as artifacts,
figures as images, tables as CSV, reports as markdown / HTML, and numeric metrics dicts as
metrics; once per run the git commit and package versions as tags; the version of every
versioned dataset read or written as a ``dataset_version.<name>`` tag; the run record
``run_spec.json`` (:mod:`llm_finetune.experiments.record`) that ``llm-finetune rerun`` reads back; and, at
the end of the run, the tuned chat model in MLflow's ``transformers`` flavour, registered in the model
registry with the run's metrics as version tags (:mod:`llm_finetune.serving.mlflow_model`).

kedro-mlflow's ``MlflowArtifactDataset`` cannot wrap a versioned dataset on kedro 1.7
(``VersionAlreadyExistsError``), hence a hook.
"""

from __future__ import annotations

import json
import logging
import os
from numbers import Number

import mlflow
from kedro.framework.hooks import hook_impl

from llm_finetune.experiments.record import REPRODUCES_ENV, REPRODUCES_TAG, RUN_SPEC, RunRecord, source_digests
from llm_finetune.io import NotWritten
from llm_finetune.provenance import flat_leaves, package_versions, url_secrets
from llm_finetune.runtime_params import check_runtime_params
from llm_finetune.serving.mlflow_model import WEIGHTS, ServingSettings, log_chat_model, register

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
    saved folder under that artifact path, ``text: <file>`` a string as that artifact file, ``tags: <prefix>``
    a dict's plain leaves as tags; ``run_spec: sources | base_model`` adds a dataset plan's file digests or the
    base model's record to the run record; ``model: <stage>`` logs the saved model folder as a chat model and
    registers it, per ``mlflow_model.stages.<stage>``, once the pipeline has finished (the version's tags are
    the run's metrics, which exist only then). Factories
    resolve the prefix per stage (``{stage}.align.`` -> ``rm.align.``), so no dataset name is written in
    Python. DataFrames are logged as ``tables/<name>.csv`` and figures as ``<name>.png`` without metadata.
    """

    def __init__(self):
        self._catalog = None
        self._tagged = False
        self._record = RunRecord()
        self._params: dict = {}
        self._models: list[tuple[str, object, ServingSettings]] = []

    @hook_impl
    def after_context_created(self, context) -> None:
        self._params = context.params
        for stage in (context.params.get("mlflow_model") or {}).get("stages") or {}:
            ServingSettings.for_stage(context.params, stage)  # a bad value fails now, not after training
        self._record = RunRecord(parameters=context.params,
                                 runtime_params=dict(context.config_loader.runtime_params or {}),
                                 reproduces=os.environ.get(REPRODUCES_ENV) or None)

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog
        self._tagged = False
        self._models = []

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline) -> None:
        self._record.start(run_params, pipeline.inputs())

    @hook_impl
    def before_node_run(self, node) -> None:
        if self._tagged or mlflow.active_run() is None:
            return
        tags = {f"version.{k}": v for k, v in package_versions().items()}
        git = self._record.git
        if git.get("commit"):
            tags |= {"git_commit": git["commit"], "git_dirty": str(git["dirty"]).lower()}
        if self._record.reproduces:
            tags[REPRODUCES_TAG] = self._record.reproduces
        mlflow.set_tags(tags)
        self._log_record()
        self._tagged = True

    def _log_record(self) -> None:
        if mlflow.active_run() is not None:
            mlflow.log_dict(json.loads(json.dumps(self._record.as_dict(), default=str)), RUN_SPEC)

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data) -> None:
        """Tag the run with the version of every versioned dataset a node read; the run record keeps those
        the run did not write itself (``--load-versions`` of a rerun)."""
        version = self._tag_version(dataset_name, "resolve_load_version")
        if self._record.read(dataset_name, version) and self._tagged:
            self._log_record()

    def _dataset(self, dataset_name: str):
        return self._catalog.get(dataset_name) if self._catalog is not None else None

    def _tag_version(self, dataset_name: str, resolver: str) -> str | None:
        if mlflow.active_run() is None:
            return None
        dataset = self._dataset(dataset_name)
        version = getattr(dataset, resolver, lambda: None)() if dataset is not None else None
        if version:
            mlflow.set_tag(f"dataset_version.{dataset_name}", version)
        return version

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data) -> None:
        if isinstance(data, NotWritten):  # an output its settings switched off: no version, nothing to log
            return
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
        if "model" in tracking and getattr(dataset, "last_saved_path", None) is not None:
            settings = ServingSettings.for_stage(self._params, tracking["model"])
            if settings is not None:
                source = f"{dataset_name}@{dataset.resolve_save_version() or 'unversioned'}"
                self._models.append((source, dataset.last_saved_path, settings))
        if "metrics" in tracking and isinstance(data, dict):
            mlflow.log_metrics(flatten_metrics(data, tracking["metrics"]))
        if "tags" in tracking and isinstance(data, dict):
            mlflow.set_tags({f"{tracking['tags']}{k}": v for k, v in data.items() if isinstance(v, (str, bool, int))})
        if tracking.get("run_spec") == "sources" and isinstance(data, list):
            self._record.sources |= source_digests(data)
            self._log_record()
        elif tracking.get("run_spec") == "base_model" and isinstance(data, dict):
            self._record.base_model = data
            self._log_record()
        if type(data).__name__ == "Figure":
            mlflow.log_figure(data, f"{dataset_name}.png")
        elif type(data).__name__ == "DataFrame":
            mlflow.log_text(data.to_csv(index=False), f"tables/{dataset_name}.csv")
        elif isinstance(data, str) and "text" in tracking:
            mlflow.log_text(data, tracking["text"])

    @hook_impl(tryfirst=True)  # before kedro-mlflow's after_pipeline_run, which ends the run
    def after_pipeline_run(self) -> None:
        """Log and register the chat models saved in this run, now that its metrics are logged."""
        models, self._models = self._models, []
        run = mlflow.active_run()
        if run is None:
            return
        try:
            for source, folder, settings in models:
                info = log_chat_model(folder, settings, source)
                mlflow.set_tag(f"mlflow_model.{settings.stage}", info.model_uri)
                if settings.registered_name:
                    version = register(info.model_uri, settings, run.info.run_id,
                                       extra_tags={"source": source, "weights": WEIGHTS})
                    mlflow.set_tag(f"registered_model.{settings.stage}",
                                   f"models:/{settings.registered_name}/{version.version}")
        except Exception:
            mlflow.end_run("FAILED")  # the nodes ran, but the run did not deliver its model: say so in MLflow
            raise

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._models = []
