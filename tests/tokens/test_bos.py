"""BOS exactly where the tokenizer adds it: once, at the start of every sequence, in training, pairs,
generation prompts and ``pt`` documents (a Llama-style tokenizer that adds ``<s>``), and nowhere for a
tokenizer that adds none."""

from __future__ import annotations

import pytest

from llm_finetune.models.loading import load_tokenizer
from llm_finetune.tokens.blocks import document_ids
from llm_finetune.tokens.conversations import (
    IGNORE_INDEX,
    TokenizeSettings,
    encode_prompts,
    sequence_prefix,
    tokenize_records,
)
from llm_finetune.tokens.pairs import tokenize_pairs
from llm_finetune.tokens.templates import load_template
from tests.conftest import alpaca_record

RECORDS = [alpaca_record("Name a bird.", "An owl."), alpaca_record("Add 2 and 3.", "5", user_input="2, 3")]
BOS_JINJA = ("{{ bos_token }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")


@pytest.fixture(scope="module")
def bos_tokenizer(bos_model_dir):
    return load_tokenizer(bos_model_dir)


def _settings(template: str) -> TokenizeSettings:
    return TokenizeSettings(template=load_template(template), cutoff_len=256)


def _bos_count(ids: list[int], bos: int) -> int:
    return sum(token == bos for token in ids)


def test_the_prefix_is_what_the_tokenizer_adds(bos_tokenizer, tiny_tokenizer):
    assert sequence_prefix(bos_tokenizer) == [bos_tokenizer.bos_token_id]
    assert bos_tokenizer("An owl.")["input_ids"][0] == bos_tokenizer.bos_token_id
    assert sequence_prefix(tiny_tokenizer) == []  # SmolLM2-like: no BOS, so none is added


@pytest.mark.parametrize("template", ["alpaca", "chatml", "mistral"])
def test_training_rows_start_with_one_bos(bos_tokenizer, template):
    """alpaca / chatml have no BOS slot (it is added); mistral writes ``{bos}`` itself (it is not doubled)."""
    bos = bos_tokenizer.bos_token_id
    rows, quarantined = tokenize_records(RECORDS, _settings(template), bos_tokenizer)
    assert not quarantined
    for row in rows:
        assert row["input_ids"][0] == bos and _bos_count(row["input_ids"], bos) == 1
        assert row["labels"][0] == IGNORE_INDEX  # the BOS is context, never a target


def test_a_jinja_template_that_writes_bos_gets_no_second_one(bos_tokenizer):
    tokenizer = load_tokenizer(bos_tokenizer.name_or_path)
    tokenizer.chat_template = BOS_JINJA
    rows, _ = tokenize_records(RECORDS, TokenizeSettings(template="tokenizer", cutoff_len=256), tokenizer)
    assert all(row["input_ids"][0] == tokenizer.bos_token_id for row in rows)
    assert all(_bos_count(row["input_ids"], tokenizer.bos_token_id) == 1 for row in rows)


def test_generation_prompts_are_the_training_prefix_with_its_bos(bos_tokenizer):
    settings = _settings("alpaca")
    rows, _ = tokenize_records(RECORDS, settings, bos_tokenizer)
    prompts = encode_prompts(RECORDS, settings.template, bos_tokenizer)
    for row, prompt in zip(rows, prompts):
        assert prompt[0] == bos_tokenizer.bos_token_id and _bos_count(prompt, bos_tokenizer.bos_token_id) == 1
        assert row["input_ids"][: len(prompt)] == prompt


def test_both_sides_of_a_pair_start_with_bos(bos_tokenizer):
    record = {"prompt": [{"role": "user", "content": "Name a bird."}], "chosen": {"role": "assistant", "content": "An owl."},
              "rejected": {"role": "assistant", "content": "A trout."}, "system": None, "tools": None, "meta": {}}
    [pair], _ = tokenize_pairs([record], _settings("alpaca"), bos_tokenizer)
    for side in ("chosen", "rejected"):
        ids = pair[f"{side}_input_ids"]
        assert ids[0] == bos_tokenizer.bos_token_id and _bos_count(ids, bos_tokenizer.bos_token_id) == 1


def test_pretraining_documents_get_the_same_prefix(bos_tokenizer, tiny_tokenizer):
    [doc] = document_ids(["The owl hunts at night."], bos_tokenizer)
    assert doc[:1] == sequence_prefix(bos_tokenizer) and doc[-1] == bos_tokenizer.eos_token_id
    [plain] = document_ids(["The owl hunts at night."], tiny_tokenizer)
    assert plain[0] != tiny_tokenizer.bos_token_id


def test_a_tokenizer_without_bos_keeps_its_rows_unchanged(tiny_tokenizer):
    rows, _ = tokenize_records(RECORDS, _settings("alpaca"), tiny_tokenizer)
    text = tiny_tokenizer.decode(rows[0]["input_ids"])
    assert text.startswith("Below is an instruction") and tiny_tokenizer.bos_token_id not in rows[0]["input_ids"]
