"""The rerun plan: what it passes to Kedro so that today's configuration does not change the run, and what it
refuses or warns about before anything runs."""

from __future__ import annotations

import json
import os

from llm_finetune.experiments.rerun import RerunPlan, check_base_model, leaves, nested, plan_rerun
from llm_finetune.models.registry import ModelSpec

RECORDED = {"model": "qwen2.5-0.5b", "model_registry": {"qwen2.5-0.5b": {"source": "hub", "repo_id": "Qwen/Q",
                                                                         "revision": None}},
            "train": {"learning_rate": 1e-3, "lora": {"r": 8}}, "data": {"datasets": ["demo"], "max_rows": 0}}


def record(**extra) -> dict:
    return {"parameters": RECORDED, "runtime_params": {"train": {"lora": {"r": 8}}}, "read_versions": {},
            "load_versions": {}, "git": {}, "sources": {}, "base_model": {}} | extra


def test_names_with_dots_survive_the_round_trip():
    assert nested(leaves(RECORDED)) == RECORDED
    assert ("model_registry", "qwen2.5-0.5b", "repo_id") in leaves(RECORDED)


def test_today_s_configuration_does_not_change_the_rerun(tmp_path):
    """conf/base now says learning_rate 5e-4 and caps the rows: the rerun sets the recorded values back."""
    today = json.loads(json.dumps(RECORDED))
    today["train"]["learning_rate"] = 5e-4
    today["data"]["max_rows"] = 100
    today["judge"] = {"llm": None}
    plan = plan_rerun(record(), today, tmp_path)
    assert plan.runtime_params == {"train": {"lora": {"r": 8}, "learning_rate": 1e-3}, "data": {"max_rows": 0}}
    assert any("2 parameter(s) resolve differently today" in w for w in plan.warnings)
    assert any("the configuration now has judge.llm = None" in w for w in plan.warnings)
    assert plan.refusals == []


def test_a_hub_base_model_is_pinned_to_its_recorded_commit_and_read_versions_become_load_versions(tmp_path):
    commit = "a" * 40
    plan = plan_rerun(record(base_model={"name": "qwen2.5-0.5b", "source": "hub", "commit": commit},
                             read_versions={"sft.adapter": "2026-12-01T10.00.00.000Z"}), RECORDED, tmp_path)
    assert plan.runtime_params["model_registry"] == {"qwen2.5-0.5b": {"revision": commit}}
    assert plan.load_versions == {"sft.adapter": "2026-12-01T10.00.00.000Z"}


def test_a_changed_or_missing_data_file_is_refused_and_a_git_difference_is_a_warning(tmp_path):
    (tmp_path / "data.json").write_text("[1]")
    sources = {"kept": {"origin": "data.json", "sha256": "0" * 64}, "gone": {"origin": "nowhere.json",
                                                                            "sha256": "1" * 64},
               "url": {"origin": "https://example.com/d.json", "sha256": "2" * 64}}
    plan = plan_rerun(record(sources=sources, git={"commit": "b" * 40, "dirty": True, "diff_sha256": "c" * 64}),
                      RECORDED, tmp_path)
    assert len(plan.refusals) == 2 and plan.refusals[0] == "dataset gone: nowhere.json is gone"  # the URL: not here
    assert plan.refusals[1].startswith("dataset kept: data.json changed since the run (sha256 000000000000 -> ")
    assert any("uncommitted changes on top of bbbbbbbbbbbb" in w for w in plan.warnings)


def test_a_base_model_whose_files_changed_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    registry = {"mine": {"source": "local", "path": str(folder)}}
    params = {"model": "mine", "model_registry": registry}
    fingerprint = ModelSpec.from_registry(registry, "mine").fingerprint()
    same = RerunPlan(runtime_params={}, load_versions={})
    check_base_model({"base_model": {"fingerprint": fingerprint}}, params, same)
    assert same.refusals == []
    (folder / "model.safetensors").write_bytes(b"new weights")
    os.utime(folder / "config.json", (0, 0))
    changed = RerunPlan(runtime_params={}, load_versions={})
    check_base_model({"base_model": {"fingerprint": fingerprint}}, params, changed)
    now = ModelSpec.from_registry(registry, "mine").fingerprint()
    assert now != fingerprint
    assert changed.refusals == [f"base model mine: fingerprint {now}, the run used {fingerprint} (its files changed)"]
