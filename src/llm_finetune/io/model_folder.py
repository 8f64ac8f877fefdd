"""A versioned Kedro dataset for transformers model folders and peft adapter folders.

The same class stores a materialised base model, a trained LoRA adapter and (later) a
merged export. Loading returns the folder's :class:`~pathlib.Path`, never a model object:
nodes load weights themselves with the dtype and device they need, so no model crosses
nodes in memory and every partial rerun reads the same files.

Saving accepts either a folder (copied with hard links, so re-registering a cached
500 MB base model as a new version costs no disk) or a :class:`ModelBundle` of objects
with ``save_pretrained`` plus extra text files.
"""

from __future__ import annotations

import glob
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import (
    AbstractDataset,
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)

from llm_finetune.io.paths import load_path
from llm_finetune.models.materialize import link_tree

logger = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    """Objects to write into one model folder."""

    model: Any = None
    tokenizer: Any = None
    files: dict[str, str | dict | list] = field(default_factory=dict)
    moved: dict[str, Path] = field(default_factory=dict)  # large files written elsewhere (a GGUF), moved in

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, path in self.moved.items():
            shutil.move(path, folder / name)
            if not any(Path(path).parent.iterdir()):
                Path(path).parent.rmdir()  # the producer's staging folder
        if self.model is not None:
            self.model.save_pretrained(folder)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        for name, content in self.files.items():
            text = content if isinstance(content, str) else json.dumps(content, indent=2, default=str)
            (folder / name).write_text(text)


@dataclass(frozen=True)
class NotWritten:
    """What a node returns for an output its settings switch off (``export.format: merged`` writes no
    GGUF): the dataset writes no version folder, so nothing empty poses as a model."""

    reason: str


WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")


class ModelFolderDataset(AbstractVersionedDataset[Any, Path]):
    """Save a model/adapter folder; load the path of the (versioned) folder.

    A save is written aside (``<folder>.partial``), checked, and renamed into place: a crash
    mid-save leaves no folder that a later run would load as the latest version.

    Args:
        filepath: folder path; with versioning, versions live under it.
        required_files: names that must exist in a saved folder (checked on save and load).
        weights: the folder must hold weights: one of :data:`WEIGHT_FILES` (an adapter, a whole
            model, or a sharded one through its index, with every shard the index names).
        version: Kedro version, set from ``versioned: true`` in the catalog.
    """

    def __init__(
        self,
        filepath: str,
        required_files: list[str] | None = None,
        weights: bool = False,
        version: Version | None = None,
        metadata: dict | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath)
        if protocol != "file":
            raise DatasetError(f"ModelFolderDataset stores local folders only, got {filepath!r}")
        self._required = list(required_files or [])
        self._weights = weights
        self.metadata = metadata
        self.last_saved_path: Path | None = None
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=lambda p: Path(p).exists(),
            glob_function=lambda pattern: sorted(glob.glob(pattern)),
        )

    def load(self) -> Path:
        folder = Path(get_filepath_str(self._get_load_path(), "file"))
        if not folder.is_dir():
            raise DatasetError(f"Model folder {folder} does not exist")
        self._check(folder)
        return folder

    def save(self, data: Any) -> None:
        if isinstance(data, NotWritten):
            logger.info("Not written: %s (%s)", self._filepath, data.reason)
            self.last_saved_path, self._skipped_save = None, True
            return
        self._skipped_save = False
        if not isinstance(data, (str, Path, ModelBundle)):
            raise DatasetError(f"ModelFolderDataset saves a folder path or a ModelBundle, got {type(data).__name__}")
        folder = Path(get_filepath_str(self._get_save_path(), "file"))
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            if isinstance(data, ModelBundle):
                data.write(partial)
            else:
                link_tree(Path(data), partial)
            self._check(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            if folder.parent.is_dir() and not any(folder.parent.iterdir()):
                folder.parent.rmdir()  # the empty version folder of a failed save
            raise
        if folder.exists():
            shutil.rmtree(folder)
        partial.rename(folder)
        self.last_saved_path = folder

    def resolve_load_version(self) -> str | None:
        """Kedro compares the newest version with the one just saved after every save; after a
        :class:`NotWritten` there is none to compare (and maybe no version at all), so the save
        version answers that one check."""
        if getattr(self, "_skipped_save", False):
            self._skipped_save = False
            return self.resolve_save_version()
        return super().resolve_load_version()

    def _check(self, folder: Path) -> None:
        missing = [name for name in self._required if not (folder / name).exists()]
        if self._weights:
            missing += _missing_weights(folder)
        if missing:
            raise DatasetError(f"Model folder {folder} lacks {', '.join(missing)}")

    def _exists(self) -> bool:
        path = load_path(self)
        return path is not None and path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "required_files": self._required,
                "weights": self._weights}


def _missing_weights(folder: Path) -> list[str]:
    """What a folder lacks to hold weights: a weight file, or shards its index names."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        return [name for name in shards if not (folder / name).is_file()] or ([] if shards else [f"{index.name} shards"])
    if any((folder / name).is_file() for name in WEIGHT_FILES):
        return []
    return [f"weights (one of {', '.join(WEIGHT_FILES)})"]


class CacheFolderDataset(AbstractDataset[None, Path]):
    """A working folder owned by the catalog (e.g. the base-model conversion cache).

    Loading creates it if needed and returns its path; it is never saved to.
    """

    def __init__(self, path: str, metadata: dict | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> Path:
        self._path.mkdir(parents=True, exist_ok=True)
        return self._path

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path} is a cache folder: nodes read it, they do not save to it")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class CredentialsDataset(AbstractDataset[None, dict]):
    """Hands a credentials entry (``credentials.yml``) to a node, e.g. a judge API key.

    Kedro gives credentials to datasets only; this dataset is how a node that calls an
    external service receives them. Its description never includes the secrets.
    """

    def __init__(self, credentials: dict | None = None, metadata: dict | None = None) -> None:
        self._credentials = dict(credentials or {})
        self.metadata = metadata

    def load(self) -> dict:
        return dict(self._credentials)

    def save(self, data: dict) -> None:
        raise DatasetError("Credentials are read from conf/*/credentials.yml, not saved")

    def _describe(self) -> dict[str, Any]:
        return {"keys": sorted(self._credentials)}
