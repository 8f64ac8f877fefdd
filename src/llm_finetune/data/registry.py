"""Dataset registries: ours (``conf/base/datasets.yml``) and LLaMA-Factory's ``dataset_info.json``.

Our entries::

    name:
      path: data/01_raw/file.json | url: https://... + sha256: <hex> | hub: owner/name (+ subset, split, folder)
      format: alpaca | sharegpt | openai | prompt_completion | text | preference | medicalgpt
      ranking: false        # true: chosen / rejected columns make preference pairs
      columns: {...}        # layout field -> column name (LLaMA-Factory's names)
      tags: {...}           # role / content keys and role names of sharegpt-style turns
      file_type: auto       # auto | json | jsonl | csv | parquet | text
      max_rows: null

LLaMA-Factory's entries are read unchanged: ``file_name`` (relative to the folder of
``dataset_info.json``; a file or a folder), ``hf_hub_url`` (+ ``subset``, ``split``,
``folder``), ``formatting``, ``ranking``, ``columns``, ``tags``. Resolution fails before
anything is read when a name is unknown or ambiguous, a local file is missing, or an entry
needs something we do not support (ModelScope / Modelers hubs, image / audio / video columns).
"""

from __future__ import annotations

import json
from pathlib import Path

from llm_finetune.data.align import FORMATS, AlignmentError, aligner_for, record_kind
from llm_finetune.data.sources import FILE_TYPES

SOURCE_KEYS = ("path", "url", "hub")
OUR_KEYS = {*SOURCE_KEYS, "sha256", "subset", "split", "folder", "format", "ranking", "columns", "tags",
            "file_type", "max_rows", "description"}
MEDIA_COLUMNS = ("images", "videos", "audios")


class RegistryError(ValueError):
    """A dataset selection or registry entry is wrong."""


def read_dataset_info(path: str | Path) -> dict:
    """LLaMA-Factory's ``dataset_info.json`` as a dict of entries."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RegistryError(f"data.dataset_info: {path} does not exist")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RegistryError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
    if not isinstance(entries, dict):
        raise RegistryError(f"{path}: expected an object of dataset entries")
    return entries


def selection(datasets: object) -> list[dict]:
    """``data.datasets`` as a list of ``{"name", "max_rows"?}``: a name, "a,b", or a list of names / dicts."""
    if isinstance(datasets, str):
        datasets = [part.strip() for part in datasets.split(",") if part.strip()]
    if not isinstance(datasets, list) or not datasets:
        raise RegistryError("data.datasets must name at least one dataset (a name or a list of names)")
    chosen = []
    for item in datasets:
        item = {"name": item} if isinstance(item, str) else dict(item)
        if not item.get("name"):
            raise RegistryError(f"data.datasets entry {item} has no name")
        chosen.append(item)
    names = [item["name"] for item in chosen]
    if len(set(names)) != len(names):
        raise RegistryError(f"data.datasets lists a dataset twice: {names}")
    return chosen


def resolve_datasets(datasets: object, own_registry: dict | None, dataset_info: str | None = None,
                     max_rows: int | None = None) -> list[dict]:
    """Resolve the selected names to full specs (source, format, ranking, columns, tags, kind, max_rows)."""
    own = dict(own_registry or {})
    info = read_dataset_info(dataset_info) if dataset_info else {}
    info_dir = Path(dataset_info).expanduser().parent if dataset_info else None
    specs = []
    for item in selection(datasets):
        name = item["name"]
        if name in own and name in info:
            raise RegistryError(f"Dataset {name!r} is defined both in datasets.yml and in {dataset_info}; rename one")
        if name in own:
            spec = _from_own(name, own[name])
        elif name in info:
            spec = _from_llamafactory(name, info[name], info_dir)
        else:
            known = sorted(own) + sorted(info)
            raise RegistryError(f"Unknown dataset {name!r}; registered: {known}"
                                + ("" if dataset_info else " (set data.dataset_info to use a dataset_info.json)"))
        cap = item.get("max_rows", spec.get("max_rows")) or max_rows
        spec["max_rows"] = int(cap) if cap else None
        if "weight" in item:
            spec["weight"] = float(item["weight"])
        specs.append(_checked(spec))
    kinds = {spec["kind"] for spec in specs}
    if len(kinds) > 1:
        raise RegistryError(f"data.datasets mixes record kinds {sorted(kinds)}: "
                            + ", ".join(f"{s['name']}={s['kind']}" for s in specs))
    return specs


def _from_own(name: str, entry: dict) -> dict:
    if not isinstance(entry, dict):
        raise RegistryError(f"datasets.yml: entry {name!r} must be a mapping")
    unknown = set(entry) - OUR_KEYS
    if unknown:
        raise RegistryError(f"datasets.yml: entry {name!r} has unknown keys {sorted(unknown)}; known: {sorted(OUR_KEYS)}")
    source = {key: entry[key] for key in (*SOURCE_KEYS, "sha256", "subset", "split", "folder", "file_type")
              if entry.get(key) is not None}
    return {"name": name, "registry": "datasets.yml", "source": source, "format": entry.get("format", "alpaca"),
            "ranking": bool(entry.get("ranking", False)), "columns": dict(entry.get("columns") or {}),
            "tags": dict(entry.get("tags") or {}), "max_rows": entry.get("max_rows")}


def _from_llamafactory(name: str, entry: dict, info_dir: Path) -> dict:
    columns = dict(entry.get("columns") or {})
    media = [column for column in MEDIA_COLUMNS if column in columns]
    if media:
        raise RegistryError(f"dataset_info.json: {name!r} has {media} columns; multimodal data is not supported")
    layout = entry.get("formatting", "alpaca")
    if layout == "alpaca" and set(columns) == {"prompt"} and not entry.get("ranking"):
        layout, columns = "text", {"text": columns["prompt"]}  # LF's pretraining entries (c4_demo, wiki_demo)
    if entry.get("file_name"):
        source = {"path": str(info_dir / entry["file_name"])}
    elif entry.get("hf_hub_url"):
        source = {"hub": entry["hf_hub_url"]} | {k: entry[k] for k in ("subset", "split", "folder") if entry.get(k)}
    elif entry.get("script_url"):
        raise RegistryError(f"dataset_info.json: {name!r} uses script_url (a local loading script); "
                            "register its output file with file_name instead")
    else:
        hubs = [key for key in ("ms_hub_url", "om_hub_url") if entry.get(key)]
        raise RegistryError(f"dataset_info.json: {name!r} has no file_name or hf_hub_url"
                            + (f" (only {hubs}: ModelScope / Modelers hubs are not supported)" if hubs else ""))
    return {"name": name, "registry": "dataset_info.json", "source": source,
            "format": layout, "ranking": bool(entry.get("ranking", False)),
            "columns": columns, "tags": dict(entry.get("tags") or {}), "max_rows": entry.get("num_samples")}


def _checked(spec: dict) -> dict:
    name, source = spec["name"], spec["source"]
    kinds = [key for key in SOURCE_KEYS if source.get(key)]
    if len(kinds) != 1:
        raise RegistryError(f"Dataset {name!r} needs exactly one of path / url / hub, got {sorted(source)}")
    if spec["format"] not in FORMATS:
        raise RegistryError(f"Dataset {name!r}: format {spec['format']!r} is not one of {FORMATS}")
    if source.get("file_type", "auto") not in FILE_TYPES:
        raise RegistryError(f"Dataset {name!r}: file_type {source['file_type']!r} is not one of {FILE_TYPES}")
    try:
        aligner_for(spec["format"], spec["ranking"])
    except AlignmentError as err:
        raise RegistryError(f"Dataset {name!r}: {err}") from err
    if "path" in source and not Path(source["path"]).expanduser().exists():
        raise RegistryError(f"Dataset {name!r}: {source['path']} does not exist")
    if "url" in source and not str(source["url"]).startswith(("http://", "https://")):
        raise RegistryError(f"Dataset {name!r}: url must be http(s), got {source['url']!r}")
    spec["kind"] = record_kind(spec["format"], spec["ranking"])
    return spec
