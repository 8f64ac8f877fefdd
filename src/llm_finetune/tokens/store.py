"""Tokenize once: tokenized splits persisted as Arrow, keyed by everything that shapes them.

The key hashes the tokenizer files, the template (its full text), ``loss_on``, ``cutoff_len``,
``truncation``, ``packing`` and the records themselves. A rerun with the same key reuses the
cached folder (``datasets.load_from_disk``, memory-mapped); any change builds a new one. A
cache folder holds ``tokens/`` (the Arrow training rows), ``quarantine.json`` and
``stats.json``; it is written to a temporary name first and renamed, so a half-written cache
is never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt", "tokenizer.model")


# bump when our tokenization, masking or packing code changes what it writes for the same inputs
TOKENS_CODE_VERSION = 3
# packages whose upgrade can change token ids for the same text and tokenizer files
TOKENIZING_PACKAGES = ("tokenizers", "transformers", "sentencepiece")


def tokenizing_versions() -> dict:
    """Versions that decide the token ids besides the tokenizer files: ours and the tokenizing packages'."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"llm_finetune_tokens": TOKENS_CODE_VERSION}
    for name in TOKENIZING_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def cache_key(records: list[dict], tokenizer_folder: Path, settings: dict) -> str:
    """16 hex digits of a SHA-256 over tokenizer files, settings, records and :func:`tokenizing_versions`.

    Without the versions, a tokenizers / transformers upgrade (or a change of our own tokenization
    code) would reuse token ids computed by the old code.
    """
    identity = {"settings": settings, "versions": tokenizing_versions()}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for name in TOKENIZER_FILES:
        path = Path(tokenizer_folder) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def cached(cache_dir: Path, key: str) -> Path | None:
    folder = Path(cache_dir) / key
    return folder if (folder / "stats.json").is_file() else None


def store(cache_dir: Path, key: str, rows: list[dict], quarantined: list[dict], stats: dict) -> Path:
    """Write the Arrow rows, quarantine and stats under ``cache_dir/key`` (atomically)."""
    import datasets

    folder = Path(cache_dir) / key
    scratch = Path(cache_dir) / f".{key}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    columns = sorted({name for row in rows for name in row}) if rows else ["input_ids", "labels"]
    table = {name: [row.get(name) for row in rows] for name in columns}
    datasets.Dataset.from_dict(table).save_to_disk(str(scratch / "tokens"))
    (scratch / "quarantine.json").write_text(json.dumps(quarantined, ensure_ascii=False, default=str))
    (scratch / "stats.json").write_text(json.dumps(stats, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
    return folder


def load_rows(folder: Path):
    """The Arrow training rows of a tokenized folder (memory-mapped ``datasets.Dataset``)."""
    import datasets

    return datasets.load_from_disk(str(Path(folder) / "tokens"))


def load_side_files(folder: Path) -> tuple[list[dict], dict]:
    return (json.loads((Path(folder) / "quarantine.json").read_text()),
            json.loads((Path(folder) / "stats.json").read_text()))
