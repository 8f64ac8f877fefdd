"""The export pipeline's nodes on a real adapter: merged folder in the training template, GGUF files
written by llama.cpp's converter (read back with the gguf package and served by llama.cpp), the
Ollama Modelfile, and the mistakes that fail before the merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_finetune.evaluation.generation import Decoding
from llm_finetune.evaluation.llamacpp import complete_ids, llamacpp_server
from llm_finetune.io import ModelBundle, NotWritten
from llm_finetune.models.gguf_export import GgufExportError, check_gguf_types, convert_to_gguf
from llm_finetune.models.loading import load_tokenizer
from llm_finetune.pipelines.export.nodes import check_export_params, export_gguf, merge_adapter
from llm_finetune.tokens.conversations import encode_prompts
from llm_finetune.tokens.templates import load_template, render_prompt
from llm_finetune.tokens.templates.portable import to_ollama_template

pytestmark = pytest.mark.slow
GGUF = {"dtype": "float32", "format": "gguf", "gguf": {"types": ["f32", "q8_0"], "converter_dir": None,
                                                          "ollama_parameters": {"temperature": 0.7}}}
RECORD = {"messages": [{"role": "user", "content": "Name a primary colour."}, {"role": "assistant", "content": "-"}]}


@pytest.fixture(scope="module")
def exported(smol_vocab_model_dir, smol_vocab_adapter, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("export")
    merge_adapter(smol_vocab_model_dir, smol_vocab_adapter, None, GGUF).write(out / "merged")
    export_gguf(out / "merged", GGUF).write(out / "gguf")
    return out / "merged", out / "gguf"


def test_the_merged_tokenizer_renders_the_training_template(exported):
    merged, _ = exported
    tokenizer = load_tokenizer(merged)
    chat = [{"role": "user", "content": "Name a primary colour."}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == render_prompt(
        RECORD, load_template("alpaca"), tokenizer)
    export = json.loads((merged / "export.json").read_text())
    assert export["chat_template"] == "the training template" and "<|im_start|>" in export["base_chat_template"]


def test_gguf_files_hold_the_model_tokenizer_and_training_template(exported):
    import gguf

    merged, folder = exported
    assert {"model-f32.gguf", "model-q8_0.gguf", "Modelfile", "prompt_template.json", "tokenizer.json",
            "gguf.json"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob("*.partial"))
    types = {}
    for kind in ("f32", "q8_0"):
        reader = gguf.GGUFReader(folder / f"model-{kind}.gguf")
        fields = reader.fields
        assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
        template = bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
        assert template == load_tokenizer(merged).chat_template
        types[kind] = {t.tensor_type.name for t in reader.tensors if t.name == "blk.0.attn_q.weight"}
    assert types == {"f32": {"F32"}, "q8_0": {"Q8_0"}}


def test_the_modelfile_carries_the_training_template_and_its_stops(exported):
    merged, folder = exported
    tokenizer = load_tokenizer(merged)
    text = (folder / "Modelfile").read_text()
    template = load_template("alpaca")
    assert text.startswith("FROM ./model-f32.gguf\n")
    assert f'TEMPLATE """{to_ollama_template(template, tokenizer)}"""' in text
    assert f'SYSTEM """{template.default_system}"""' in text
    assert f"PARAMETER stop {json.dumps(tokenizer.eos_token)}" in text and "PARAMETER temperature 0.7" in text


def test_llama_cpp_serves_the_exported_gguf_on_the_training_prompt(exported):
    merged, folder = exported
    tokenizer = load_tokenizer(merged)
    encoded = encode_prompts([RECORD], load_template("alpaca"), tokenizer)
    with llamacpp_server(folder / "model-q8_0.gguf", n_ctx=512, n_parallel=1) as url:
        generated, timing = complete_ids(url, encoded * 2, Decoding(max_new_tokens=5), [tokenizer.eos_token_id],
                                         progress=False)
    assert len(generated[0]) >= 1 and all(0 <= t < len(tokenizer) for t in generated[0])
    assert generated[0] == generated[1] and timing["rows"] == 2  # greedy and no prompt cache: repeatable


def test_format_merged_writes_no_gguf(exported):
    merged, _ = exported
    assert isinstance(export_gguf(merged, GGUF | {"format": "merged"}), NotWritten)


@pytest.mark.parametrize("change, message", [
    ({"format": "onnx"}, "export.format must be one of"),
    ({"gguf": {"types": ["q4_k_m"]}}, "export.gguf.types must name"),
    ({"gguf": {"types": ["f16"], "converter_dir": "/nonexistent"}}, "pip install --no-deps --target /nonexistent"),
])
def test_export_mistakes_fail_before_the_merge(change, message):
    with pytest.raises((ValueError, GgufExportError), match=message):
        check_export_params(GGUF | change)


def test_gguf_types_come_as_a_list_or_as_one_string_from_the_command_line():
    assert check_gguf_types("f16+q8_0") == ["f16", "q8_0"] and check_gguf_types(["q8_0", "q8_0"]) == ["q8_0"]


def test_a_tokenizer_the_converter_does_not_know_is_named_and_leaves_no_file(tiny_model_dir, tmp_path):
    with pytest.raises(GgufExportError, match="pre-tokenizer was not recognized"):
        convert_to_gguf(tiny_model_dir, tmp_path / "m.gguf", "f32")
    assert list(tmp_path.iterdir()) == []


def test_a_bundle_moves_large_files_in(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "big.gguf").write_bytes(b"GGUF")
    ModelBundle(files={"a.json": {"x": 1}}, moved={"model.gguf": staging / "big.gguf"}).write(tmp_path / "out")
    assert (tmp_path / "out" / "model.gguf").read_bytes() == b"GGUF" and not staging.exists()
