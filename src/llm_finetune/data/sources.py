"""Read a dataset source into a list of raw records.

A source is one of: a local file (``path``), an http(s) URL (``url`` with ``sha256``),
or a Hugging Face Hub dataset id (``hub``, with optional ``subset`` and ``split``).
Local and downloaded files are parsed by content, not suffix: a JSON array, JSON lines,
CSV or Parquet. httpx does the HTTP; the format sniffing is a few lines and kept here
because no library detects JSON vs JSONL by content.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

PARQUET_MAGIC = b"PAR1"


class SourceError(ValueError):
    """The configured source cannot be read."""


def read_source(source: dict) -> list[dict]:
    """Return the raw records of ``source`` (see module docstring for its keys)."""
    kinds = [k for k in ("path", "url", "hub") if source.get(k)]
    if len(kinds) != 1:
        raise SourceError(f"data.source needs exactly one of path / url / hub, got {sorted(source)}")
    kind = kinds[0]
    if kind == "path":
        path = Path(source["path"]).expanduser()
        if not path.is_file():
            raise SourceError(f"Data file {path} does not exist (data.source.path)")
        records = parse_bytes(path.read_bytes(), origin=str(path))
    elif kind == "url":
        records = parse_bytes(fetch_url(source["url"], source.get("sha256")), origin=source["url"])
    else:
        records = read_hub(source["hub"], source.get("subset"), source.get("split", "train"))
    if not records:
        raise SourceError(f"Data source {source[kind]} holds no records")
    limit = source.get("max_rows")
    if limit:
        records = records[: int(limit)]
    logger.info("Read %d records from %s", len(records), source[kind])
    return records


def fetch_url(url: str, sha256: str | None) -> bytes:
    """Download ``url``; verify its sha256 when given, log it when not."""
    import httpx

    if not url.startswith(("http://", "https://")):
        raise SourceError(f"data.source.url must be http(s), got {url!r}")
    response = httpx.get(url, follow_redirects=True, timeout=60.0)
    response.raise_for_status()
    digest = hashlib.sha256(response.content).hexdigest()
    if sha256 is None:
        logger.warning("No sha256 given for %s; its sha256 is %s (pin it in data.source.sha256)", url, digest)
    elif digest != sha256.lower():
        raise SourceError(f"sha256 mismatch for {url}: expected {sha256}, got {digest}")
    return response.content


def read_hub(dataset_id: str, subset: str | None, split: str) -> list[dict]:
    """Load a Hub dataset split with ``datasets`` (needs network access to the Hub)."""
    import datasets

    try:
        loaded = datasets.load_dataset(dataset_id, subset, split=split)
    except (ConnectionError, OSError) as err:
        raise SourceError(f"Could not load Hub dataset {dataset_id!r} ({err}); offline? use data.source.path") from err
    return [dict(row) for row in loaded]


def parse_bytes(blob: bytes, origin: str) -> list[dict]:
    """Parse JSON array, JSON lines, Parquet or CSV, detected from the content."""
    if blob.startswith(PARQUET_MAGIC):
        import pandas as pd

        return pd.read_parquet(io.BytesIO(blob)).to_dict(orient="records")
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SourceError(f"{origin}: not UTF-8 text (byte {err.start})") from err
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SourceError(f"{origin}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
        return _require_objects(data, origin)
    if stripped.startswith("{"):
        return parse_json_lines(text, origin)
    import pandas as pd

    return pd.read_csv(io.StringIO(text), keep_default_na=False).to_dict(orient="records")


def parse_json_lines(text: str, origin: str) -> list[dict]:
    """JSON objects, one per non-blank line; a bad line is named by its number."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise SourceError(f"{origin}: invalid JSON on line {number}: {err.msg}") from err
    return _require_objects(records, origin)


def _require_objects(data: object, origin: str) -> list[dict]:
    if not isinstance(data, list):
        raise SourceError(f"{origin}: expected a list of records, got {type(data).__name__}")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise SourceError(f"{origin}: row {index} is {type(row).__name__}, expected an object")
    return data
