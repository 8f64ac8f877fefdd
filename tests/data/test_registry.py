"""Dataset registries: ours (conf/base/datasets.yml) and LLaMA-Factory's dataset_info.json."""

import json
import shutil

import pytest
import yaml

from llm_finetune.data.registry import RegistryError, resolve_datasets
from llm_finetune.pipelines.data.nodes import align_records, download_raw_data, resolve_dataset_plan
from tests.conftest import REAL_DATA, REPO, real_data

OWN_REGISTRY = yaml.safe_load((REPO / "conf" / "base" / "datasets.yml").read_text())["datasets"]


@pytest.fixture
def info_file(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps([{"instruction": "a", "output": "b"}]))
    entries = {"local": {"file_name": "rows.json"},
               "chat": {"file_name": "rows.json", "formatting": "sharegpt", "columns": {"messages": "conversations"}},
               "pairs": {"file_name": "rows.json", "ranking": True},
               "hub": {"hf_hub_url": "org/set", "subset": "en", "split": "test"},
               "modelscope": {"ms_hub_url": "org/set"},
               "images": {"file_name": "rows.json", "formatting": "sharegpt", "columns": {"images": "images"}},
               "script": {"script_url": "my_script"}}
    path = tmp_path / "dataset_info.json"
    path.write_text(json.dumps(entries))
    return path


def test_llamafactory_entries_resolve_unchanged(info_file):
    specs = resolve_datasets(["local", "hub"], {}, str(info_file))
    assert specs[0]["source"] == {"path": str(info_file.parent / "rows.json")}
    assert specs[0]["format"] == "alpaca" and specs[0]["kind"] == "conversation"
    assert specs[1]["source"] == {"hub": "org/set", "subset": "en", "split": "test"}
    assert resolve_datasets("pairs", {}, str(info_file))[0]["kind"] == "preference"


@pytest.mark.parametrize("names, message", [
    ("nope", "Unknown dataset 'nope'; registered: .*chat"),
    ("modelscope", "only \\['ms_hub_url'\\]: ModelScope / Modelers hubs are not supported"),
    ("images", "multimodal data is not supported"),
    ("script", "script_url"),
    ("local,pairs", "mixes record kinds \\['conversation', 'preference'\\]"),
    ("local,local", "lists a dataset twice"),
    ([], "at least one dataset"),
])
def test_selection_mistakes_fail_before_reading(info_file, names, message):
    with pytest.raises(RegistryError, match=message):
        resolve_datasets(names, {}, str(info_file))


def test_our_registry_entries_are_checked(tmp_path):
    with pytest.raises(RegistryError, match="unknown keys \\['formatting'\\]"):
        resolve_datasets("a", {"a": {"path": "x", "formatting": "sharegpt"}})
    with pytest.raises(RegistryError, match="x.json does not exist"):
        resolve_datasets("a", {"a": {"path": str(tmp_path / "x.json")}})
    with pytest.raises(RegistryError, match="exactly one of path / url / hub"):
        resolve_datasets("a", {"a": {"path": "x", "hub": "y"}})
    with pytest.raises(RegistryError, match="'text' with ranking is not supported"):
        resolve_datasets("a", {"a": {"hub": "y", "format": "text", "ranking": True}})
    with pytest.raises(RegistryError, match="defined both"):
        resolve_datasets("a", {"a": {"hub": "y"}}, str(_info(tmp_path, {"a": {"hf_hub_url": "z"}})))
    spec = resolve_datasets([{"name": "a", "max_rows": 5}], {"a": {"hub": "y"}}, max_rows=100)[0]
    assert spec["max_rows"] == 5 and resolve_datasets("a", {"a": {"hub": "y"}}, max_rows=100)[0]["max_rows"] == 100


def _info(folder, entries):
    path = folder / "info.json"
    path.write_text(json.dumps(entries))
    return path


def test_the_shipped_registry_resolves_the_demo_data():
    spec = resolve_datasets("demo_instructions", OWN_REGISTRY)[0]
    assert spec["source"] == {"path": "data/01_raw/demo_instructions.json"} and spec["kind"] == "conversation"


@pytest.mark.parametrize("name, rows, kind", [
    ("book_instructions", 1100, "conversation"), ("book_preferences", 1100, "preference"),
    ("alpaca_en_demo", 999, "conversation"), ("dpo_en_demo", 300, "preference"),
    ("glaive_toolcall_en_demo", 300, "conversation"),
])
def test_every_real_file_aligns_through_the_registries_with_nothing_quarantined(name, rows, kind, tmp_path):
    """The book's files through datasets.yml (URL entries, served from the sha256 cache), LLaMA-Factory's
    three demo files through its own dataset_info.json, unchanged. The book's preference file holds 6
    pairs whose chosen equals rejected: those, and only those, are quarantined."""
    info = real_data("dataset_info.json")
    cache = tmp_path / "cache"
    cache.mkdir()
    upstream = {"instruction-data.json": "book_instruction_data.json",
                "instruction-data-with-preference.json": "book_instruction_data_with_preference.json"}
    for entry in OWN_REGISTRY.values():
        file_name = entry.get("url", "").rsplit("/", 1)[-1]
        if file_name in upstream:
            shutil.copy(REAL_DATA / upstream[file_name], cache / entry["sha256"])
    ties = {"book_preferences": 6}.get(name, 0)
    data = {"datasets": [name], "dataset_info": str(info), "max_quarantine_share": 0.01, "mix": {}}
    plan = resolve_dataset_plan(data, OWN_REGISTRY)
    raw = download_raw_data(plan, str(cache))
    records, quarantined, report = align_records(raw, plan, data)
    assert [q["reason"] for q in quarantined] == ["chosen equals rejected"] * ties and len(records) == rows - ties
    assert report["total"] == {"rows_in": rows, "rows_kept": rows - ties, "rows_quarantined": ties,
                               "identical_pairs": ties, "undesirable_rows": 0, "rows_mixed": rows - ties, "kind": kind}
    source = plan[0]["source"]
    original = cache / source["sha256"] if "url" in source else info.parent / source["path"]
    assert len(json.loads(original.read_text())) == rows
