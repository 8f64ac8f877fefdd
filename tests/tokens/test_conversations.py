"""Loss masks follow the rendered pieces exactly; truncation policies are counted; prompts match training."""

import pytest

from llm_finetune.tokens.conversations import (
    IGNORE_INDEX,
    TokenizeSettings,
    encode_prompts,
    token_stats,
    tokenize_records,
)
from llm_finetune.tokens.templates import TOKENIZER, load_template, render_pieces
from tests.conftest import alpaca_record

MULTI = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"},
                      {"role": "user", "content": "Add 2 and 3"}, {"role": "assistant", "content": "The sum is 5"}],
         "system": None, "tools": None, "meta": {"row": 7, "dataset": "chat"}}


def settings(template="alpaca", cutoff=256, loss_on="assistant", truncation="truncate_response"):
    return TokenizeSettings(TOKENIZER if template == TOKENIZER else load_template(template), cutoff, loss_on,
                            truncation)


def trained_text(row, tokenizer):
    return tokenizer.decode([t for t in row["labels"] if t != IGNORE_INDEX])


@pytest.mark.parametrize("template", ["alpaca", "chatml", TOKENIZER])
def test_only_answers_are_trained_and_the_prompt_is_what_generation_sees(tiny_tokenizer, template):
    record = alpaca_record("Give the plural of the noun.", "mice", "mouse")
    [row], quarantined = tokenize_records([record], settings(template), tiny_tokenizer)
    [prompt_ids] = encode_prompts([record], settings(template).template, tiny_tokenizer)
    assert not quarantined and row["input_ids"][: len(prompt_ids)] == prompt_ids
    assert all(label == IGNORE_INDEX for label in row["labels"][: len(prompt_ids)])
    assert row["labels"][len(prompt_ids):] == row["input_ids"][len(prompt_ids):]
    answer = render_pieces(record, settings(template).template, tiny_tokenizer)[-1].text
    assert trained_text(row, tiny_tokenizer) == answer and "mice" in answer
    assert row["labels"].count(tiny_tokenizer.eos_token_id) == 1  # the answer's end marker is a target


@pytest.mark.parametrize("loss_on, expected", [("all", None), ("assistant", "Hello<|im_end|>The sum is 5<|im_end|>"),
                                                ("last_assistant", "The sum is 5<|im_end|>")])
def test_loss_on_modes(tiny_tokenizer, loss_on, expected):
    [row], _ = tokenize_records([MULTI], settings("chatml", loss_on=loss_on), tiny_tokenizer)
    if expected is None:
        assert row["labels"] == row["input_ids"]
    else:
        assert trained_text(row, tiny_tokenizer) == expected
    assert row["source_row"] == 7 and row["dataset"] == "chat"


def test_truncation_policies_are_applied_and_counted(tiny_tokenizer):
    long_answer = alpaca_record("Say hi", "hi " * 80)
    full = len(tokenize_records([long_answer], settings(), tiny_tokenizer)[0][0]["input_ids"])
    [cut], _ = tokenize_records([long_answer], settings(cutoff=full - 10), tiny_tokenizer)
    assert cut["truncated"] and len(cut["input_ids"]) == full - 10
    rows, quarantined = tokenize_records([long_answer], settings(cutoff=full - 10, truncation="drop"), tiny_tokenizer)
    assert rows == [] and quarantined[0]["reason"] == "longer than cutoff_len"
    multi_len = len(tokenize_records([MULTI], settings("chatml"), tiny_tokenizer)[0][0]["input_ids"])
    [kept], _ = tokenize_records([MULTI], settings("chatml", cutoff=multi_len - 1, truncation="truncate_oldest_turns"),
                                 tiny_tokenizer)
    assert kept["turns_dropped"] == 1 and trained_text(kept, tiny_tokenizer) == "The sum is 5<|im_end|>"
    assert "Hi there" not in tiny_tokenizer.decode(kept["input_ids"])
    stats = token_stats([cut, kept], quarantined)
    assert stats["truncated"] == 2 and stats["turns_dropped"] == 1 and stats["quarantined_by_reason"] == {
        "longer than cutoff_len": 1}


def test_rows_with_nothing_to_train_or_unrenderable_are_quarantined(tiny_tokenizer):
    long_prompt = alpaca_record("word " * 200, "ok")
    tools = MULTI | {"tools": '[{"name": "f"}]'}
    rows, quarantined = tokenize_records([long_prompt, tools, alpaca_record("a", "b")], settings(cutoff=100),
                                         tiny_tokenizer)
    assert len(rows) == 1
    assert [(q["row"], q["reason"]) for q in quarantined] == [(1, "template cannot render the row"),
                                                              (0, "no trained tokens")]
    assert "tool definitions" in quarantined[0]["detail"]


def test_bad_settings_fail_early():
    with pytest.raises(ValueError, match="loss_on 'prompt'"):
        settings(loss_on="prompt")
    with pytest.raises(ValueError, match="truncation 'middle'"):
        settings(truncation="middle")
