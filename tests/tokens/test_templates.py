"""Every template renders the book's entry data[50] and a multi-turn sharegpt row exactly as pinned here."""

import json

import pytest

from llm_finetune.data.formats import align_sharegpt, columns_for, tags_for
from llm_finetune.tokens.templates import (
    ALPACA_HEADER,
    TOKENIZER,
    ChatTemplate,
    TemplateError,
    alpaca_input,
    available_templates,
    check_template,
    load_template,
    render_pieces,
    render_prompt,
    stop_strings,
    stop_token_ids,
    template_from_saved,
)
from tests.conftest import alpaca_record, real_data

SHAREGPT_ROW = {"conversations": [
    {"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi!"}, {"from": "gpt", "value": "Hello."},
    {"from": "human", "value": "Add 2 and 3."}, {"from": "gpt", "value": "5"}]}
E = "<|im_end|>"  # the tiny tokenizer's EOS; {eos} in a template becomes this

# data[50] of the book's file: {I} instruction, {N} input, {O} output
BOOK_50 = {
    "alpaca": [f"{ALPACA_HEADER}\n\n### Instruction:\n{{I}}\n\n### Input:\n{{N}}\n\n### Response:\n", f"{{O}}{E}"],
    "phi3": ["<|user|>\n{I}\n{N}\n<|assistant|>:\n", f"{{O}}{E}"],
    "chatml": ["<|im_start|>user\n{I}\n\n{N}<|im_end|>\n<|im_start|>assistant\n", "{O}<|im_end|>"],
    "llama3": ["<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{I}\n\n{N}<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n", "{O}<|eot_id|>"],
    "vicuna": ["A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
               "detailed, and polite answers to the user's questions. USER: {I}\n\n{N} ASSISTANT:", f" {{O}}{E}"],
    "mistral": ["<|im_start|>[INST] {I}\n\n{N} [/INST]", f"{{O}}{E}"],
    "zephyr": [f"<|user|>\n{{I}}\n\n{{N}}{E}\n<|assistant|>\n", f"{{O}}{E}"],
    "tokenizer": ["<|im_start|>user\n{I}\n\n{N}<|im_end|>\n<|im_start|>assistant\n", "{O}<|im_end|>\n"],
}
MULTI_TURN = {
    "alpaca": ["Be brief.\n\n### Instruction:\nHi!\n\n### Response:\n", f"Hello.{E}",
               "\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n", f"5{E}"],
    "phi3": ["<|system|>\nBe brief.\n<|user|>\nHi!\n<|assistant|>:\n", f"Hello.{E}",
             "\n<|user|>\nAdd 2 and 3.\n<|assistant|>:\n", f"5{E}"],
    "chatml": ["<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
               "Hello.<|im_end|>", "\n<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n", "5<|im_end|>"],
    "llama3": ["<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>"
               "user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
               "Hello.<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nAdd 2 and 3.<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n", "5<|eot_id|>"],
    "vicuna": ["Be brief. USER: Hi! ASSISTANT:", f" Hello.{E}", "USER: Add 2 and 3. ASSISTANT:", f" 5{E}"],
    "mistral": ["<|im_start|>[INST] Be brief.\n\nHi! [/INST]", f"Hello.{E}", "[INST] Add 2 and 3. [/INST]", f"5{E}"],
    "zephyr": [f"<|system|>\nBe brief.{E}\n<|user|>\nHi!{E}\n<|assistant|>\n", f"Hello.{E}",
               f"\n<|user|>\nAdd 2 and 3.{E}\n<|assistant|>\n", f"5{E}"],
    "tokenizer": ["<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
                  "Hello.<|im_end|>\n", "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n",
                  "5<|im_end|>\n"],
}


def test_every_shipped_template_is_pinned():
    assert set(available_templates()) == set(BOOK_50) == set(MULTI_TURN)


@pytest.mark.parametrize("name", sorted(BOOK_50))
def test_the_books_entry_50(name, tiny_tokenizer):
    entry = json.loads(real_data("book_instruction_data.json").read_text())[50]
    record = alpaca_record(entry["instruction"], entry["output"], entry["input"])
    pieces = render_pieces(record, load_template(name), tiny_tokenizer)
    expected = [text.replace("{I}", entry["instruction"]).replace("{N}", entry["input"]).replace("{O}", entry["output"])
                for text in BOOK_50[name]]
    assert [p.text for p in pieces] == expected and [p.kind for p in pieces] == ["prompt", "answer"]


@pytest.mark.parametrize("name", sorted(MULTI_TURN))
def test_a_multi_turn_sharegpt_row(name, tiny_tokenizer):
    record = align_sharegpt(SHAREGPT_ROW, columns_for("sharegpt", None), tags_for("sharegpt", None))
    pieces = render_pieces(record, load_template(name), tiny_tokenizer)
    assert [p.text for p in pieces] == MULTI_TURN[name]
    assert [p.kind for p in pieces] == ["prompt", "answer", "prompt", "answer"]
    assert render_prompt(record, load_template(name), tiny_tokenizer) == "".join(MULTI_TURN[name][:3])


def book_format_input(entry):
    """The book's ``format_input`` (ch. 7), written out here as the reference."""
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry["input"] else ""
    return instruction_text + input_text


@pytest.mark.parametrize("entry", [
    {"instruction": "Identify the correct spelling of the following word.", "input": "Ocassion", "output": "Occasion"},
    {"instruction": "What is an antonym of 'complicated'?", "input": "", "output": "An antonym of 'complicated' is 'simple'."},
])
def test_alpaca_rendering_is_the_books_text(entry, tiny_tokenizer):
    record = alpaca_record(entry["instruction"], entry["output"], entry["input"])
    assert alpaca_input(record) == book_format_input(entry)
    prompt, answer = render_pieces(record, load_template("alpaca"), tiny_tokenizer)
    assert prompt.text + answer.text == book_format_input(entry) + f"\n\n### Response:\n{entry['output']}{E}"


def test_tools_function_calls_and_observations():
    record = {"messages": [{"role": "user", "content": "Weather?"}, {"role": "function_call", "content": '{"name": "w"}'},
                           {"role": "observation", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}],
              "system": None, "tools": '[{"name": "w"}]', "meta": {}}
    pieces = render_pieces(record, load_template("chatml"))
    assert "<tools>\n[{\"name\": \"w\"}]\n</tools>" in pieces[0].text
    assert pieces[1].text == '<tool_call>\n{"name": "w"}\n</tool_call><|im_end|>'
    assert "<tool_response>\nsunny\n</tool_response>" in pieces[2].text
    for name in ("alpaca", "vicuna"):
        with pytest.raises(TemplateError, match="cannot render tool definitions"):
            render_pieces(record, load_template(name))


def test_template_files_are_checked_and_users_can_add_their_own(tmp_path, tiny_tokenizer):
    with pytest.raises(TemplateError, match="Unknown template 'nope'"):
        load_template("nope")
    with pytest.raises(TemplateError, match="unknown keys \\['assistant'\\]"):
        ChatTemplate.from_yaml("assistant: '{content}'", "bad")
    (tmp_path / "mine.yaml").write_text('user: "Q: {content}\\n"\nanswer_prefix: "A: "\n')
    mine = load_template("mine", tmp_path)
    assert "mine" in available_templates(tmp_path)
    assert [p.text for p in render_pieces(alpaca_record("Hi", "Yo"), mine, tiny_tokenizer)] == ["Q: Hi\nA: ", f"Yo{E}"]
    check_template(load_template("chatml"), tiny_tokenizer)
    with pytest.raises(TemplateError, match="needs special tokens .*<\\|eot_id\\|>"):
        check_template(load_template("llama3"), tiny_tokenizer)


def test_content_is_never_scanned_for_placeholders(tiny_tokenizer):
    pieces = render_pieces(alpaca_record("Print {eos} and {content}", "ok"), load_template("chatml"), tiny_tokenizer)
    assert "Print {eos} and {content}" in pieces[0].text


def test_the_saved_template_is_the_one_used_and_a_mismatch_is_an_error(tiny_tokenizer):
    chatml = load_template("chatml")
    saved = {"template": "chatml", "source": chatml.source.replace("assistant\\n", "bot\\n")}
    assert template_from_saved(saved, tiny_tokenizer).answer_prefix == "<|im_start|>bot\n"
    with pytest.raises(TemplateError, match="trained with 'chatml'"):
        template_from_saved(saved, tiny_tokenizer, requested="alpaca")
    with pytest.raises(TemplateError, match="chat template differs"):
        template_from_saved({"template": TOKENIZER, "source": "{{ other }}"}, tiny_tokenizer)
    assert stop_strings(chatml, tiny_tokenizer) == ()  # <|im_end|> is the tiny tokenizer's EOS


def test_end_of_turn_tokens_are_end_ids_for_registry_and_jinja_templates(tiny_model_dir):
    """With an EOS other than the turn end (as Llama-3 and Qwen have), <|im_end|> still ends an answer:
    a single-token stop of a registry template, and the token a Jinja template writes after an answer."""
    from llm_finetune.models.loading import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    tokenizer.eos_token = "<|endoftext|>"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    chatml = load_template("chatml")
    assert stop_token_ids(chatml, tokenizer) == [im_end]
    assert stop_strings(chatml, tokenizer) == ()  # a single token: stopped on as an id, not a string
    assert stop_token_ids(TOKENIZER, tokenizer) == [im_end]
    multi = ChatTemplate.from_yaml("stop: ['### End']", "multi")
    assert stop_token_ids(multi, tokenizer) == [] and stop_strings(multi, tokenizer) == ("### End",)
