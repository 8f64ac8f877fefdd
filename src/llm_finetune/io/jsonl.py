"""A versioned JSON-lines dataset of records (lists of dicts), previewable in kedro-viz.

kedro-datasets' ``pandas.JSONDataset`` can write JSON lines but hands nodes DataFrames,
which mangle nested fields (message lists, meta dicts); nodes here pass plain records.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, get_filepath_str, get_protocol_and_path
from kedro_datasets._typing import TablePreview

from llm_finetune.data.sources import parse_json_lines
from llm_finetune.io.paths import load_path


class JSONLinesDataset(AbstractVersionedDataset[list[dict], list[dict]]):
    """One JSON object per line, UTF-8.

    Args:
        filepath: the ``.jsonl`` file (with versioning, versions live under it).
        version: Kedro version, set from ``versioned: true`` in the catalog.
    """

    def __init__(self, filepath: str, version: Version | None = None, metadata: dict | None = None) -> None:
        protocol, path = get_protocol_and_path(filepath)
        if protocol != "file":
            raise DatasetError(f"JSONLinesDataset stores local files only, got {filepath!r}")
        self.metadata = metadata
        super().__init__(filepath=PurePosixPath(path), version=version,
                         exists_function=lambda p: Path(p).exists(),
                         glob_function=lambda pattern: sorted(glob.glob(pattern)))

    def load(self) -> list[dict]:
        path = Path(get_filepath_str(self._get_load_path(), "file"))
        raw = parse_json_lines(path.read_bytes(), str(path))
        if raw.unreadable:
            bad = raw.unreadable[0]
            raise DatasetError(f"{path}: line {bad['line']}: {bad['reason']} ({bad['detail']})")
        return raw.records

    def save(self, data: list[dict]) -> None:
        path = Path(get_filepath_str(self._get_save_path(), "file"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for record in data:
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def preview(self, nrows: int = 10) -> TablePreview:
        """The first rows as a table (kedro-viz ``TablePreview``: columns / index / data)."""
        path = Path(get_filepath_str(self._get_load_path(), "file"))
        with path.open(encoding="utf-8") as handle:
            rows = [json.loads(line) for line, _ in zip(handle, range(nrows))]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        return {"columns": columns, "index": list(range(len(rows))),
                "data": [[_cell(row.get(column)) for column in columns] for row in rows]}

    def _exists(self) -> bool:
        path = load_path(self)
        return path is not None and path.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}


def _cell(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else json.dumps(value, ensure_ascii=False)
