"""Read a dataset source into raw records, keeping every line that could not be read.

A source is one of: a local file or folder (``path``), an http(s) URL (``url``, with
``sha256`` to verify and cache it), or a Hugging Face Hub dataset id (``hub``, with
optional ``subset``, ``split`` and ``folder``). Files are parsed by content, not by
suffix: Parquet (magic bytes), a JSON array (``[``), JSON lines (``{``), CSV (a first line
of column names) or plain text (one record ``{"text": line}`` per line).

Line-oriented files (JSON lines, text) are read line by line: a line that is not valid
JSON or not UTF-8 is returned as *unreadable* with its line number and reason, so the
align step can quarantine and count it; a JSON array or CSV file that cannot be parsed
is unusable as a whole and raises :class:`SourceError` naming the file, line and column.
httpx does the HTTP; the content sniffing is hand-written because no library tells
JSON from JSON lines by content.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

PARQUET_MAGIC = b"PAR1"
FILE_TYPES = ("auto", "json", "jsonl", "csv", "parquet", "text")
_HEADER_NAME = re.compile(r"^[A-Za-z_][\w .-]{0,63}$")


class SourceError(ValueError):
    """The configured source cannot be read."""


@dataclass
class RawFile:
    """What a source held: its records, the lines that could not be read, and where it came from."""

    origin: str
    file_type: str
    records: list = field(default_factory=list)
    unreadable: list[dict] = field(default_factory=list)
    lines: list[int | None] | None = None  # line number of each record, for line-oriented files
    files: list[str] | None = None  # file of each record, for folder sources
    records_in_source: int | None = None  # before a ``max_rows`` cap; None: not capped

    def as_dict(self) -> dict:
        return {"origin": self.origin, "file_type": self.file_type, "records": self.records,
                "lines": self.lines, "files": self.files, "unreadable": self.unreadable,
                "records_in_source": self.records_in_source}

    def cap(self, limit: int | None) -> None:
        """Keep the first ``limit`` records, and only the unreadable lines that came before the cut."""
        if not limit or len(self.records) <= int(limit):
            return
        limit = int(limit)
        self.records_in_source = len(self.records)
        logger.warning("%s: max_rows = %d keeps %d of %d records (0 / null: all)", self.origin, limit, limit,
                       len(self.records))
        if self.lines is not None and self.lines[limit] is not None:
            # (file, line) orders records and unreadable lines alike: folder files are read in name order
            cut_file = self.files[limit] if self.files else ""
            cut = (cut_file, self.lines[limit])
            self.unreadable = [u for u in self.unreadable if (u.get("file", cut_file), u["line"]) < cut]
        self.records = self.records[:limit]
        self.lines = self.lines[:limit] if self.lines is not None else None
        self.files = self.files[:limit] if self.files is not None else None


def read_source(source: dict) -> list[dict]:
    """Records of a single-file source (path | url + sha256 | hub); any unreadable line is an error."""
    raw = load_source(source)
    if raw.unreadable:
        first = raw.unreadable[0]
        raise SourceError(f"{raw.origin}: line {first['line']}: {first['reason']} ({first['detail']})")
    if not raw.records:
        raise SourceError(f"Data source {raw.origin} holds no records")
    return _require_objects(raw.records, raw.origin)


def load_source(source: dict, cache_dir: str | Path | None = None, plain_text: bool = False) -> RawFile:
    """Read ``source`` into a :class:`RawFile`, capped at ``source['max_rows']`` records when set.

    With ``plain_text`` (a ``text`` dataset), a file that is not JSON or Parquet is read as
    lines of text, never as CSV.
    """
    kinds = [k for k in ("path", "url", "hub") if source.get(k)]
    if len(kinds) != 1:
        raise SourceError(f"A data source needs exactly one of path / url / hub, got {sorted(source)}")
    file_type = source.get("file_type") or "auto"
    if file_type not in FILE_TYPES:
        raise SourceError(f"file_type {file_type!r} is not one of {FILE_TYPES}")
    kind = kinds[0]
    if kind == "path":
        raw = read_path(Path(source["path"]).expanduser(), file_type, plain_text)
    elif kind == "url":
        blob = fetch_url(source["url"], source.get("sha256"), cache_dir)
        raw = parse_bytes(blob, source["url"], file_type, plain_text)
    else:
        raw = RawFile(source["hub"], "hub", read_hub(source["hub"], source.get("subset"),
                                                     source.get("split") or "train", source.get("folder")))
    raw.cap(source.get("max_rows"))
    logger.info("Read %d records (%d unreadable lines) from %s", len(raw.records), len(raw.unreadable), raw.origin)
    return raw


def read_path(path: Path, file_type: str = "auto", plain_text: bool = False) -> RawFile:
    """A file, or every file in a folder (sorted by name, hidden files skipped) as one source."""
    if path.is_dir():
        paths = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")), key=str)
        if not paths:
            raise SourceError(f"Data folder {path} holds no files")
        merged = RawFile(str(path), "folder", lines=[], files=[])
        for file in paths:
            part = parse_bytes(file.read_bytes(), str(file), file_type, plain_text)
            merged.records += part.records
            merged.lines += part.lines if part.lines is not None else [None] * len(part.records)
            merged.files += [str(file)] * len(part.records)
            merged.unreadable += [item | {"file": str(file)} for item in part.unreadable]
        return merged
    if not path.is_file():
        raise SourceError(f"Data file {path} does not exist")
    return parse_bytes(path.read_bytes(), str(path), file_type, plain_text)


def fetch_url(url: str, sha256: str | None, cache_dir: str | Path | None = None) -> bytes:
    """Download ``url``; verify its sha256 when given (and then reuse a cached copy), log it when not."""
    import httpx

    if not url.startswith(("http://", "https://")):
        raise SourceError(f"A data source url must be http(s), got {url!r}")
    cached = Path(cache_dir) / sha256.lower() if cache_dir and sha256 else None
    if cached is not None and cached.is_file():
        blob = cached.read_bytes()
        if hashlib.sha256(blob).hexdigest() == sha256.lower():
            logger.info("Using the cached download of %s (%s)", url, cached)
            return blob
    try:
        response = httpx.get(url, follow_redirects=True, timeout=60.0)
        response.raise_for_status()
    except httpx.HTTPError as err:
        raise SourceError(f"Could not download {url}: {type(err).__name__}: {err}") from err
    digest = hashlib.sha256(response.content).hexdigest()
    if sha256 is None:
        logger.warning("No sha256 given for %s; its sha256 is %s (pin it with sha256: in the registry)", url, digest)
    elif digest != sha256.lower():
        raise SourceError(f"sha256 mismatch for {url}: expected {sha256}, got {digest}")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(response.content)
    return response.content


def read_hub(dataset_id: str, subset: str | None, split: str, folder: str | None = None) -> list[dict]:
    """Load a Hub dataset split with ``datasets`` (needs network access to the Hub)."""
    import datasets

    try:
        loaded = datasets.load_dataset(dataset_id, subset, split=split, data_dir=folder)
    except Exception as err:  # datasets raises many types offline; all mean "cannot load it"
        raise SourceError(f"Could not load Hub dataset {dataset_id!r} ({type(err).__name__}: {err}); "
                          "offline? download it and register it with a path") from err
    return loaded.to_list()


# magic numbers of files people point at by mistake: named in the error instead of read as text
BINARY_MAGIC = {b"\x1f\x8b": "gzip-compressed data", b"PK\x03\x04": "a zip archive", b"%PDF": "a PDF document",
                b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"BZh": "bzip2-compressed data",
                b"\xfd7zXZ": "xz-compressed data", b"\x28\xb5\x2f\xfd": "zstd-compressed data"}


def binary_content(blob: bytes) -> str | None:
    """What a file is when it is not text (a known magic number, or NUL bytes), else ``None``."""
    for magic, name in BINARY_MAGIC.items():
        if blob.startswith(magic):
            return name
    return "binary data (NUL bytes)" if b"\x00" in blob[:4096] else None


def parse_bytes(blob: bytes, origin: str, file_type: str = "auto", plain_text: bool = False) -> RawFile:
    """Parse a file's bytes by ``file_type``; ``auto`` detects it from the content."""
    binary = None if blob.startswith(PARQUET_MAGIC) or file_type == "parquet" else binary_content(blob)
    if binary:
        raise SourceError(f"{origin}: not a text, JSON, JSON lines, CSV or Parquet file: it holds {binary} "
                          f"(first bytes {blob[:8].hex(' ')}); decompress or convert it first")
    kind = detect_file_type(blob) if file_type == "auto" else file_type
    if plain_text and file_type == "auto" and kind == "csv":
        kind = "text"
    if kind == "parquet":
        import pyarrow.parquet as pq

        return RawFile(origin, kind, pq.read_table(io.BytesIO(blob)).to_pylist())
    if kind == "jsonl":
        return parse_json_lines(blob, origin)
    if kind == "text":
        return _parse_text_lines(blob, origin)
    text = _decode_whole(blob, origin)
    if kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SourceError(f"{origin}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))  # {"data": [...]} / {"train": [...]} wrappers
        if not isinstance(data, list):
            raise SourceError(f"{origin}: expected a JSON list of records, got a JSON {type(data).__name__}")
        return RawFile(origin, kind, data)  # rows that are not objects are quarantined by align
    return RawFile(origin, "csv", _parse_csv(text, origin))


def detect_file_type(blob: bytes) -> str:
    """``parquet``, ``json``, ``jsonl``, ``csv`` or ``text`` from the first bytes of a file."""
    if blob.startswith(PARQUET_MAGIC):
        return "parquet"
    head = blob[:4096].decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if head.startswith("["):
        return "json"
    if head.startswith("{"):
        first_line = head.split("\n", 1)[0].strip()
        return "jsonl" if first_line.endswith("}") and "\n" in head else _json_or_lines(blob)
    first_line = head.split("\n", 1)[0]
    names = next(csv.reader([first_line]), [])
    if len(names) >= 2 and all(_HEADER_NAME.match(name.strip()) for name in names):
        return "csv"
    return "text"


def _json_or_lines(blob: bytes) -> str:
    """A ``{`` file is one JSON object (e.g. ``{"data": [...]}``) or JSON lines."""
    try:
        json.loads(blob.decode("utf-8-sig"))
        return "json"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "jsonl"


def parse_json_lines(blob: bytes | str, origin: str) -> RawFile:
    """JSON objects, one per non-blank line; bad lines are kept as unreadable with their number."""
    raw = RawFile(origin, "jsonl", lines=[])
    for number, line in _lines(blob, origin, raw):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raw.unreadable.append(_unreadable(number, "invalid JSON", f"{err.msg} (column {err.colno})", line))
            continue
        if not isinstance(value, dict):
            raw.unreadable.append(_unreadable(number, "row is not an object", f"a JSON {type(value).__name__}", line))
            continue
        raw.records.append(value)
        raw.lines.append(number)
    return raw


def _parse_text_lines(blob: bytes, origin: str) -> RawFile:
    raw = RawFile(origin, "text", lines=[])
    for number, line in _lines(blob, origin, raw):
        raw.records.append({"text": line})
        raw.lines.append(number)
    return raw


def _lines(blob: bytes | str, origin: str, raw: RawFile):
    """Yield ``(line_number, text)`` of non-blank lines; undecodable lines go to ``raw.unreadable``."""
    if isinstance(blob, str):
        blob = blob.encode("utf-8")
    if blob.startswith(b"\xef\xbb\xbf"):
        blob = blob[3:]
    for number, line_bytes in enumerate(blob.split(b"\n"), start=1):
        try:
            line = line_bytes.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as err:
            raw.unreadable.append(_unreadable(number, "not UTF-8", f"at byte offset {err.start} in the line",
                                              line_bytes.decode("utf-8", errors="replace")))
            continue
        if line.strip():
            yield number, line


def _unreadable(number: int, reason: str, detail: str, text: str) -> dict:
    return {"line": number, "reason": reason, "detail": detail, "text": text[:500]}


def _decode_whole(blob: bytes, origin: str) -> str:
    try:
        return blob.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = blob[: err.start].count(b"\n") + 1
        raise SourceError(f"{origin}: not UTF-8 text (byte {err.start}, line {line})") from err


def _parse_csv(text: str, origin: str) -> list[dict]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    rows = []
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(header):
            raise SourceError(f"{origin}: CSV line {reader.line_num} has {len(fields)} fields, the header "
                              f"{len(header)} {header}; if this file is plain text, set file_type: text")
        rows.append(dict(zip(header, fields)))
    return rows


def _require_objects(data: list, origin: str) -> list[dict]:
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise SourceError(f"{origin}: row {index} is a JSON {type(row).__name__}, expected an object")
    return data
