"""Models whose architecture ships as Python files load only with an explicit per-model opt-in, and a Hub
entry is fingerprinted by the commit its revision points at, not by the literal ``main``."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from llm_finetune.models.loading import load_causal_lm, load_tokenizer
from llm_finetune.models.materialize import prepare_base_model
from llm_finetune.models.registry import ModelSpec, hub_commit

CONFIG_CODE = '''from transformers import LlamaConfig


class TinyRemoteConfig(LlamaConfig):
    model_type = "tiny-remote"
'''
MODEL_CODE = '''from transformers import LlamaForCausalLM

from .configuration_tinyremote import TinyRemoteConfig


class TinyRemoteForCausalLM(LlamaForCausalLM):
    config_class = TinyRemoteConfig
'''


@pytest.fixture()
def remote_code_model(tiny_model_dir, tmp_path):
    """The tiny Llama, declared as a custom architecture defined by Python files in its folder."""
    folder = tmp_path / "remote-model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "configuration_tinyremote.py").write_text(CONFIG_CODE)
    (folder / "modeling_tinyremote.py").write_text(MODEL_CODE)
    config = json.loads((folder / "config.json").read_text())
    config |= {"model_type": "tiny-remote", "architectures": ["TinyRemoteForCausalLM"],
               "auto_map": {"AutoConfig": "configuration_tinyremote.TinyRemoteConfig",
                            "AutoModelForCausalLM": "modeling_tinyremote.TinyRemoteForCausalLM"}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_custom_code_is_refused_without_the_opt_in_and_the_key_is_named(remote_code_model):
    spec = ModelSpec.from_registry({"mine": {"source": "local", "path": str(remote_code_model)}}, "mine")
    with pytest.raises(ValueError, match="set `trust_remote_code: true` in its model_registry entry"):
        spec.locate()  # what every preflight calls, before anything is converted or trained


def test_the_opt_in_loads_the_models_own_code_and_says_so(remote_code_model, tmp_path, caplog):
    registry = {"mine": {"source": "local", "path": str(remote_code_model), "trust_remote_code": True}}
    with caplog.at_level(logging.WARNING, logger="llm_finetune.models.registry"):
        folder, info = prepare_base_model("mine", registry, tmp_path / "cache")
    assert any("trust_remote_code is on" in r.getMessage() for r in caplog.records)
    assert info["trust_remote_code"] is True
    model = load_causal_lm(folder)  # a later load of the materialised folder keeps the entry's choice
    assert type(model).__name__ == "TinyRemoteForCausalLM"
    assert load_tokenizer(folder).eos_token == "<|im_end|>"
    with pytest.raises(ValueError, match="trust_remote_code must be true or false"):
        ModelSpec.from_registry({"x": {"source": "local", "path": "p", "trust_remote_code": "yes"}}, "x")


def _cache_ref(cache, repo_id: str, revision: str, commit: str) -> None:
    ref = cache / f"models--{repo_id.replace('/', '--')}" / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)


def test_a_hub_revision_is_fingerprinted_by_its_commit(tmp_path, monkeypatch):
    """Before, ``revision: main`` was hashed as the word 'main': a new commit on the branch reused the old
    conversion, token caches and checkpoints. Offline, the commit comes from the HF cache's refs."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    spec = ModelSpec.from_registry({"m": {"source": "hub", "repo_id": "org/model", "revision": "main"}}, "m")
    _cache_ref(tmp_path, "org/model", "main", "a" * 40)
    first = spec.fingerprint()
    assert spec.pinned().revision == "a" * 40 and hub_commit("org/model", None) == "a" * 40
    _cache_ref(tmp_path, "org/model", "main", "b" * 40)  # the branch moved
    assert spec.fingerprint() != first
    pinned = ModelSpec.from_registry({"m": {"source": "hub", "repo_id": "org/model", "revision": "b" * 40}}, "m")
    assert pinned.fingerprint() == spec.fingerprint()  # main at commit b is commit b
    with pytest.raises(OSError, match="could not resolve org/other@main|Could not resolve org/other@main"):
        ModelSpec.from_registry({"o": {"source": "hub", "repo_id": "org/other"}}, "o").fingerprint()


def test_the_base_model_record_keeps_the_requested_revision_beside_its_commit(tiny_model_dir, tmp_path, monkeypatch):
    """Before, prepare_base_model pinned the entry and then materialised the pinned copy, so source.json
    recorded the commit as the revision asked for (``revision: <sha>``, never ``main``)."""
    from huggingface_hub import constants

    from llm_finetune.models import materialize as materialize_module

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _cache_ref(tmp_path / "hub", "org/model", "main", "c" * 40)
    downloads = []

    def offline_download(spec, out):  # the Hub is unreachable here: the tiny model stands in for the download
        downloads.append(spec.revision)
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)

    monkeypatch.setattr(materialize_module, "_from_hub", offline_download)
    registry = {"m": {"source": "hub", "repo_id": "org/model", "revision": "main"}}
    _, info = prepare_base_model("m", registry, tmp_path / "cache")
    assert (info["revision"], info["commit"]) == ("main", "c" * 40)
    assert downloads == ["c" * 40]  # what is downloaded is the pinned commit
