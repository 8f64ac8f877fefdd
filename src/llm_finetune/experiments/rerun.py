"""Rerun a finished MLflow run from its record, and compare two runs.

A rerun replays ``run_spec.json`` (:mod:`llm_finetune.experiments.record`): the same pipelines,
environment and node selection, the versions of the datasets it read (Kedro's ``load_versions``), and
its parameters. The runtime parameters of the rerun are the original run's plus every leaf where
today's configuration resolves to something else than the recorded tree, so an edited
``conf/base`` does not change the rerun, and the ``runtime_params`` tag stays short. A Hub base model
is pinned to the commit the original run used.

What cannot be restored is checked and said before anything runs: a data file whose digest changed
stops the rerun (``force`` runs it anyway); another git commit, uncommitted changes, or configuration
keys the original run did not have are warnings. Afterwards :func:`compare` tells whether the new run
reproduced the old one: equal parameters, metrics (timings aside), model weights (SHA-256 of every
``*.safetensors`` artifact) and base model fingerprint.

The MLflow client does the reading; the comparison is a few dict differences, for which no library
offers more than :mod:`difflib`-level text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from llm_finetune.experiments.record import RUN_SPEC, git_state, path_digest
from llm_finetune.provenance import flat_leaves

logger = logging.getLogger(__name__)
# metrics that measure the machine, not the model: they differ between two runs of the same experiment
TIMING = re.compile(r"(_per_s|per_second|seconds|runtime|_s$|mfu|tflops|rss)", re.IGNORECASE)


_MISSING = object()


class RerunError(RuntimeError):
    """A run cannot be rerun exactly (no record, changed data)."""


def read_record(client, run_id: str) -> dict:
    """The run's ``run_spec.json``, or an error saying why a run cannot be replayed."""
    import mlflow

    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException as error:
        raise RerunError(f"no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}: {error}") from None
    names = {a.path for a in client.list_artifacts(run_id)}
    if RUN_SPEC not in names:
        raise RerunError(f"run {run_id} has no {RUN_SPEC} (it was made before runs recorded themselves, or did "
                         "not get as far as its first node): its parameters cannot be read back with their types")
    folder = client.download_artifacts(run_id, RUN_SPEC)
    return json.loads(Path(folder).read_text())


def leaves(tree: dict, path: tuple = ()) -> dict[tuple, object]:
    """The leaves of a nested dict by key path (tuples: registry names such as ``qwen2.5-0.5b`` hold dots)."""
    found = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            found |= leaves(value, path + (key,))
        else:
            found[path + (key,)] = value
    return found


def nested(found: dict[tuple, object]) -> dict:
    """The inverse of :func:`leaves`."""
    tree: dict = {}
    for path, value in found.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def merged(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` laid over it, mappings merged key by key (as Kedro merges runtime parameters)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class RerunPlan:
    """What a rerun will pass to Kedro, and what it could not restore."""

    runtime_params: dict
    load_versions: dict
    warnings: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


def plan_rerun(record: dict, current_params: dict, project_path: Path) -> RerunPlan:
    """The runtime parameters and load versions that reproduce ``record`` under today's configuration
    (``current_params``: the tree the recorded runtime parameters resolve to now)."""
    recorded, now = leaves(record["parameters"]), leaves(current_params)
    changed = {path: value for path, value in recorded.items() if now.get(path, _MISSING) != value}
    overrides = merged(record.get("runtime_params") or {}, nested(changed))
    warnings = [f"the configuration now has {'.'.join(map(str, path))} = {now[path]!r}, which the original run "
                "did not have" for path in sorted(set(now) - set(recorded), key=str)]
    if changed:
        warnings.append(f"{len(changed)} parameter(s) resolve differently today; the rerun sets the recorded values: "
                        + ", ".join(sorted(".".join(map(str, path)) for path in changed)))
    base = record.get("base_model") or {}
    if base.get("source") == "hub" and base.get("commit"):
        pin = {"model_registry": {base["name"]: {"revision": base["commit"]}}}
        overrides = merged(overrides, pin)
    plan = RerunPlan(runtime_params=overrides,
                     load_versions={**record.get("read_versions", {}), **record.get("load_versions", {})},
                     warnings=warnings)
    _check_git(record.get("git") or {}, plan)
    _check_sources(record.get("sources") or {}, project_path, plan)
    return plan


def check_base_model(record: dict, params: dict, plan: RerunPlan) -> None:
    """Refuse when the base model the rerun would load is not the one the run trained (its fingerprint)."""
    from llm_finetune.models.registry import ModelSpec

    recorded = (record.get("base_model") or {}).get("fingerprint")
    if not recorded:
        plan.warnings.append("the original run recorded no base model fingerprint")
        return
    try:
        now = ModelSpec.from_registry(params.get("model_registry") or {}, params.get("model")).fingerprint()
    except (KeyError, ValueError, OSError, RuntimeError) as error:
        plan.refusals.append(f"the base model cannot be located: {error}")
        return
    if now != recorded:
        plan.refusals.append(f"base model {params.get('model')}: fingerprint {now}, the run used {recorded} "
                             "(its files changed)")


def _check_git(recorded: dict, plan: RerunPlan) -> None:
    now = git_state()
    if not recorded.get("commit"):
        plan.warnings.append("the original run recorded no git commit (it ran outside a git checkout)")
        return
    if recorded.get("dirty"):
        plan.warnings.append(f"the original run had uncommitted changes on top of {recorded['commit'][:12]} "
                             f"(diff sha256 {recorded['diff_sha256'][:12]}), which a rerun cannot restore")
    if now.get("commit") != recorded["commit"]:
        was, now_at = recorded["commit"][:12], str(now.get("commit"))[:12]
        plan.warnings.append(f"the original run was made at commit {was}, the working tree is at {now_at}: "
                             f"`git diff {was}` shows what changed")
    elif now.get("dirty") and now.get("diff_sha256") != recorded.get("diff_sha256"):
        plan.warnings.append(f"the working tree differs from commit {recorded['commit'][:12]}: `git diff` shows how")


def _check_sources(sources: dict, project_path: Path, plan: RerunPlan) -> None:
    for name, source in sorted(sources.items()):
        if not source.get("sha256") or "://" in source.get("origin", ""):
            continue  # a URL is re-downloaded against its pinned sha256 by the data pipeline itself
        path = Path(source["origin"]).expanduser()
        digest = path_digest(path if path.is_absolute() else project_path / path)
        if digest != source["sha256"]:
            plan.refusals.append(f"dataset {name}: {source['origin']} "
                                 + ("is gone" if digest is None else
                                    f"changed since the run (sha256 {source['sha256'][:12]} -> {digest[:12]})"))


@dataclass
class Comparison:
    """The differences between two runs (``a``, ``b``) that decide whether one reproduces the other."""

    a: str
    b: str
    parameters: list[tuple[str, object, object]]
    metrics: list[tuple[str, float | None, float | None]]
    metrics_equal: int
    timings: list[tuple[str, float | None, float | None]]
    weights: list[tuple[str, str | None, str | None]]
    context: list[tuple[str, object, object]]

    @property
    def reproduced(self) -> bool:
        base_model_changed = any(key == "base_model.fingerprint" for key, _, _ in self.context)
        return not (self.parameters or self.metrics or base_model_changed or any(x != y for _, x, y in self.weights))

    def render(self) -> str:
        lines = [f"run a: {self.a}", f"run b: {self.b}", ""]
        lines += _table("parameters that differ", self.parameters, "(none)")
        lines += _table("metrics that differ", [(k, x, y) for k, x, y in self.metrics], "(none)")
        lines.append(f"  {self.metrics_equal} metric(s) equal")
        lines += _table("timings (measure the machine, expected to differ)", self.timings, "(none)")
        lines += _table("model weights (sha256)", [(k, _short(x), _short(y)) for k, x, y in self.weights],
                        "(no *.safetensors artifacts)", mark=True)
        lines += _table("context", [(k, x, y) for k, x, y in self.context], "(same)")
        lines.append("")
        lines.append("reproduced: yes (same parameters, metrics and weights)" if self.reproduced else
                     "reproduced: no")
        return "\n".join(lines)


def _short(digest: str | None) -> str:
    return digest[:16] if digest else "-"


def _table(title: str, rows: list, empty: str, mark: bool = False) -> list[str]:
    lines = ["", f"{title}:"]
    if not rows:
        return lines + [f"  {empty}"]
    width = max(len(str(row[0])) for row in rows)
    for key, x, y in rows:
        flag = ("  same" if x == y else "  DIFFERENT") if mark else ""
        lines.append(f"  {str(key):<{width}}  {_show(x):>24}  {_show(y):>24}{flag}")
    return lines


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _parameters(client, run) -> dict:
    try:
        return flat_leaves(read_record(client, run.info.run_id)["parameters"])
    except RerunError:
        return dict(run.data.params)  # runs from before run_spec.json: MLflow's string parameters


def _weights(client, run_id: str, folder: str = "") -> dict[str, str]:
    found = {}
    for item in client.list_artifacts(run_id, folder or None):
        if item.is_dir:
            found |= _weights(client, run_id, item.path)
        elif item.path.endswith(".safetensors"):
            local = Path(client.download_artifacts(run_id, item.path))
            found[item.path] = hashlib.sha256(local.read_bytes()).hexdigest()
    return found


def _same(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return x == y or (math.isnan(x) and math.isnan(y))
    return x == y


def compare(client, run_a: str, run_b: str) -> Comparison:
    """Parameters, metrics, weights and context of two MLflow runs, side by side."""
    a, b = client.get_run(run_a), client.get_run(run_b)
    params_a, params_b = _parameters(client, a), _parameters(client, b)
    parameters = [(k, params_a.get(k), params_b.get(k)) for k in sorted(set(params_a) | set(params_b))
                  if not _same(params_a.get(k), params_b.get(k))]
    metrics, timings, equal = [], [], 0
    for key in sorted(set(a.data.metrics) | set(b.data.metrics)):
        x, y = a.data.metrics.get(key), b.data.metrics.get(key)
        if TIMING.search(key):
            timings.append((key, x, y))
        elif _same(x, y):
            equal += 1
        else:
            metrics.append((key, x, y))
    weights_a, weights_b = _weights(client, run_a), _weights(client, run_b)
    weights = [(k, weights_a.get(k), weights_b.get(k)) for k in sorted(set(weights_a) | set(weights_b))]
    tags = ("base_model.fingerprint", "git_commit", "git_dirty", "mlflow.runName", "env", "pipeline_names")
    context = [(t, a.data.tags.get(t), b.data.tags.get(t)) for t in tags if a.data.tags.get(t) != b.data.tags.get(t)]
    return Comparison(run_a, run_b, parameters, metrics, equal, timings, weights, context)
