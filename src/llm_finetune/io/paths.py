"""Where a versioned dataset's current load version lives on disk (shared by our datasets' ``_exists``), and the
newest saved version of a versioned folder (``latest`` for the reward judge, chat)."""

from __future__ import annotations

from pathlib import Path

from kedro.io.core import DatasetError, get_filepath_str


def load_path(dataset) -> Path | None:
    """The local path ``dataset`` would load from, or ``None`` when no version exists yet."""
    try:
        path = dataset._get_load_path()
    except DatasetError:
        return None
    return Path(get_filepath_str(path, "file"))


def newest_version(folder: str | Path) -> Path | None:
    """The newest saved version of the versioned folder dataset at ``folder`` (Kedro's layout:
    ``<folder>/<version>/<folder name>``), or ``None`` when none is saved yet."""
    folder = Path(folder)
    versions = sorted(p for p in folder.glob(f"*/{folder.name}") if p.is_dir())
    return versions[-1] if versions else None
