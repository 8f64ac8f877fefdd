"""Where a versioned dataset's current load version lives on disk (shared by our datasets' ``_exists``)."""

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
