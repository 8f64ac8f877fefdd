"""The run record: everything ``llm-finetune rerun`` needs to run a finished run again, as one MLflow artifact.

kedro-mlflow logs the parameters flattened and as strings (``train.lora.r = "16"``) and the run's
command-line arguments as Python-repr tags, which cannot be read back with their types. So each run
also logs ``run_spec.json``: the pipelines, environment and node selection it ran; the runtime
parameters it was given and the whole resolved parameter tree; the versions of the versioned datasets
it read without writing them (what ``--load-versions`` must pin); a SHA-256 of every local data file
its dataset plans name; the base model's fingerprint (and Hub commit); the git commit with whether the
working tree had uncommitted changes (and their digest); and the package versions.

:class:`llm_finetune.hooks.TrackingHook` fills a :class:`RunRecord` as the run goes and logs it again
whenever it grows, so the artifact is complete once the run has ended.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from llm_finetune.provenance import git_commit, package_versions

RUN_SPEC = "run_spec.json"
FORMAT = 1
REPRODUCES_TAG = "llm_finetune.reproduces"
REPRODUCES_ENV = "LLM_FINETUNE_REPRODUCES"  # set by `llm-finetune rerun` for the run it starts
# the node selection of a run (Kedro's run_params keys), replayed as they were
SELECTION_KEYS = ("tags", "from_nodes", "to_nodes", "node_names", "from_inputs", "to_outputs", "namespaces",
                  "only_missing_outputs")


def git_state(folder: Path | None = None) -> dict:
    """The checked-out commit, whether tracked files differ from it, and a digest of that difference."""
    commit = git_commit()
    if commit is None:
        return {"commit": None, "dirty": None, "diff_sha256": None}
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], capture_output=True, cwd=folder).stdout
    return {"commit": commit, "dirty": bool(diff), "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None}


def path_digest(path: Path) -> str | None:
    """SHA-256 of a file, or of every file below a folder (relative names included); ``None`` if absent."""
    path = Path(path)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def source_digests(plan: list[dict]) -> dict:
    """``{dataset: {origin, sha256}}`` for each entry of a dataset plan (``url`` entries carry their pinned
    ``sha256``; Hub entries their id and revision, which the Hub may move)."""
    found = {}
    for entry in plan:
        source = entry.get("source") or {}
        if "path" in source:
            found[entry["name"]] = {"origin": source["path"], "sha256": path_digest(Path(source["path"]).expanduser())}
        elif "url" in source:
            found[entry["name"]] = {"origin": source["url"], "sha256": source.get("sha256")}
        else:
            found[entry["name"]] = {"origin": json.dumps(source, sort_keys=True), "sha256": None}
    return found


@dataclass
class RunRecord:
    """What one run recorded so far (see the module docstring); :meth:`as_dict` is ``run_spec.json``."""

    parameters: dict = field(default_factory=dict)
    runtime_params: dict = field(default_factory=dict)
    env: str | None = None
    pipeline_names: list[str] = field(default_factory=list)
    load_versions: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    free_inputs: frozenset = frozenset()
    read_versions: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    base_model: dict = field(default_factory=dict)
    reproduces: str | None = None
    git: dict = field(default_factory=dict)

    def start(self, run_params: dict, free_inputs) -> None:
        self.env = run_params.get("env")
        self.pipeline_names = list(run_params.get("pipeline_names") or ["__default__"])
        self.load_versions = dict(run_params.get("load_versions") or {})
        self.selection = {key: run_params[key] for key in SELECTION_KEYS if run_params.get(key)}
        self.free_inputs = frozenset(free_inputs)
        self.git = git_state()

    def read(self, dataset_name: str, version: str | None) -> bool:
        """Note a dataset read; ``True`` when the record grew (a versioned input the run did not write)."""
        if not version or dataset_name not in self.free_inputs or self.read_versions.get(dataset_name) == version:
            return False
        self.read_versions[dataset_name] = version
        return True

    def as_dict(self) -> dict:
        keep = ("name", "source", "fingerprint", "revision", "commit", "location")
        return {"format": FORMAT, "pipeline_names": self.pipeline_names, "env": self.env,
                "runtime_params": self.runtime_params, "parameters": self.parameters,
                "load_versions": self.load_versions, "selection": self.selection,
                "read_versions": self.read_versions, "sources": self.sources,
                "base_model": {k: v for k, v in self.base_model.items() if k in keep},
                "git": self.git, "versions": package_versions(), "reproduces": self.reproduces}
