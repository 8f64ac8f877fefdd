import pytest

from llm_finetune.templates import render_example
from llm_finetune.tokenization import IGNORE_INDEX, encode_prompt, tokenize_record, tokenize_records
from tests.conftest import alpaca_record


@pytest.mark.parametrize("template", ["alpaca", "tokenizer"])
def test_only_the_response_and_one_eos_are_trained(tiny_tokenizer, template):
    record = alpaca_record("Give the plural of the noun.", "mice", "mouse")
    row = tokenize_record(record, template, tiny_tokenizer, cutoff_len=256, mask_prompt=True)
    prompt_ids = encode_prompt(record, template, tiny_tokenizer)
    assert row["input_ids"][: len(prompt_ids)] == prompt_ids
    assert all(label == IGNORE_INDEX for label in row["labels"][: len(prompt_ids)])
    trained = [t for t in row["labels"] if t != IGNORE_INDEX]
    assert trained[-1] == tiny_tokenizer.eos_token_id
    assert trained.count(tiny_tokenizer.eos_token_id) == 1
    assert tiny_tokenizer.decode(trained[:-1]) == render_example(record, template, tiny_tokenizer)[1]
    assert row["labels"][len(prompt_ids):] == row["input_ids"][len(prompt_ids):]


def test_unmasked_prompt_trains_every_token(tiny_tokenizer):
    row = tokenize_record(alpaca_record("Say hi", "hi"), "alpaca", tiny_tokenizer, 256, mask_prompt=False)
    assert row["labels"] == row["input_ids"]


def test_cutoff_truncates_the_response_and_quarantines_long_prompts(tiny_tokenizer):
    record = alpaca_record("Say hi", "hi " * 50)
    prompt_len = len(encode_prompt(record, "alpaca", tiny_tokenizer))
    row = tokenize_record(record, "alpaca", tiny_tokenizer, cutoff_len=prompt_len + 5, mask_prompt=True)
    assert row["truncated"] and len(row["input_ids"]) == prompt_len + 5
    rows, quarantined, stats = tokenize_records([record, alpaca_record("x", "y")], "alpaca", tiny_tokenizer,
                                                cutoff_len=prompt_len, mask_prompt=True)
    assert quarantined[0]["row"] == 0 and "cutoff_len" in quarantined[0]["reason"]
    assert stats["rows"] == 1 and stats["quarantined"] == 1
    assert stats["trained_tokens"] == sum(label != IGNORE_INDEX for label in rows[0]["labels"])
