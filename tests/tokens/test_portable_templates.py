"""The training template written as Jinja (transformers, llama.cpp, MLflow) and as an Ollama Go template
renders exactly the text the model was trained on: each is run through the real engine (jinja2 as
transformers runs it; Go's text/template, compiled from tests/tokens/ollama_render.go)."""

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llm_finetune.tokens.templates import TemplateError, available_templates, load_template, render_prompt, render_text
from llm_finetune.tokens.templates.portable import to_jinja, to_ollama_template

SHIPPED = [name for name in available_templates() if name != "tokenizer"]
CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Name a colour.\nOne word."}]},
    {"system": "Answer in French.", "messages": [{"role": "user", "content": "Say hi"}]},
    {"system": "Be brief.", "messages": [
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And {content} times \"3\"?"}, {"role": "assistant", "content": "12 {{ .x }}"},
        {"role": "user", "content": "Thanks"}]},
]


def _as_chat(record: dict) -> list[dict]:
    return ([{"role": "system", "content": record["system"]}] if record.get("system") else []) + record["messages"]


def _with_open_answer(record: dict) -> dict:
    """render_prompt renders everything before the last answer: add the answer being asked for."""
    return record | {"messages": record["messages"] + [{"role": "assistant", "content": "-"}]}


@pytest.fixture(scope="module")
def ollama_renderer(tmp_path_factory) -> Path:
    go = shutil.which("go") or str(Path(os.sys.executable).parent / "go")
    out = tmp_path_factory.mktemp("go")
    env = os.environ | {"GOCACHE": str(out / "cache"), "GOPATH": str(out / "path"), "GOTOOLCHAIN": "local",
                        "GOPROXY": "off", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    source = Path(__file__).with_name("ollama_render.go")
    subprocess.run([go, "build", "-o", str(out / "render"), str(source)], check=True, env=env, cwd=out, timeout=600)
    return out / "render"


def _ollama(renderer: Path, template_text: str, messages: list[dict], tmp_path: Path) -> str:
    path = tmp_path / "template.gotmpl"
    path.write_text(template_text)
    done = subprocess.run([str(renderer), str(path)], input=json.dumps(messages), capture_output=True, text=True,
                          check=True, timeout=60)
    return done.stdout


@pytest.mark.parametrize("name", SHIPPED)
def test_jinja_template_renders_the_training_text(name, tiny_tokenizer):
    template = load_template(name)
    tokenizer = copy.deepcopy(tiny_tokenizer)  # the fixture is shared
    tokenizer.chat_template = to_jinja(template, tokenizer)
    for record in CONVERSATIONS:
        expected = render_prompt(_with_open_answer(record), template, tokenizer)
        rendered = tokenizer.apply_chat_template(_as_chat(record), tokenize=False, add_generation_prompt=True)
        assert rendered == expected, (name, record)
    full = CONVERSATIONS[2] | {"messages": CONVERSATIONS[2]["messages"][:-1]}
    assert tokenizer.apply_chat_template(_as_chat(full), tokenize=False) == render_text(full, template, tokenizer)


@pytest.mark.parametrize("name", SHIPPED)
def test_ollama_template_renders_the_training_text(name, tiny_tokenizer, ollama_renderer, tmp_path):
    template = load_template(name)
    text = to_ollama_template(template, tiny_tokenizer)
    for record in CONVERSATIONS:
        expected = render_prompt(_with_open_answer(record), template, tiny_tokenizer)
        chat = _as_chat(record)
        if not record.get("system") and template.default_system:  # Ollama sends the Modelfile's SYSTEM
            chat = [{"role": "system", "content": template.default_system}] + chat
        assert _ollama(ollama_renderer, text, chat, tmp_path) == expected, (name, record)


def test_the_tokenizers_own_template_has_no_ollama_translation(tiny_tokenizer):
    with pytest.raises(TemplateError, match="no Go translation"):
        to_ollama_template("tokenizer", tiny_tokenizer)
    assert to_jinja("tokenizer", tiny_tokenizer) == tiny_tokenizer.chat_template
