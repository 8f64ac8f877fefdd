import pytest

from llm_finetune.templates import ALPACA_HEADER, alpaca_input, check_template, render_example, render_prompt
from tests.conftest import alpaca_record


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
def test_alpaca_rendering_is_the_books_text(entry):
    record = alpaca_record(entry["instruction"], entry["output"], entry["input"])
    assert alpaca_input(record) == book_format_input(entry)
    prompt, response = render_example(record, "alpaca")
    assert prompt + response == book_format_input(entry) + f"\n\n### Response:\n{entry['output']}"
    assert response == entry["output"]


def test_alpaca_without_meta_uses_the_user_turn():
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    assert render_prompt(record, "alpaca") == f"{ALPACA_HEADER}\n\n### Instruction:\nHi\n\n### Response:\n"


def test_tokenizer_template_splits_prompt_and_response(tiny_tokenizer):
    record = alpaca_record("Say hi", "hi") | {"system": "Be brief."}
    prompt, response = render_example(record, "tokenizer", tiny_tokenizer)
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hi<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert response == "hi"  # the template's end-of-turn token is added back as the EOS target


def test_unknown_template_and_missing_chat_template(tiny_tokenizer):
    with pytest.raises(ValueError, match="Unknown template 'vicuna'"):
        check_template("vicuna")

    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="has none"):
        check_template("tokenizer", NoTemplate())


def test_alpaca_refuses_multi_turn():
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                           {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    with pytest.raises(ValueError, match="single-turn"):
        render_prompt(record, "alpaca")
