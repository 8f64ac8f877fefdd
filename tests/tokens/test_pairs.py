"""Preference pairs tokenize like SFT rows: same prompt tokens on both sides, labels on the answer only."""

from llm_finetune.tokens.conversations import IGNORE_INDEX, TokenizeSettings
from llm_finetune.tokens.pairs import tokenize_pairs
from llm_finetune.tokens.templates import load_template


def pair(prompt: str, chosen: str, rejected: str, row: int) -> dict:
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": {"role": "assistant", "content": chosen},
            "rejected": {"role": "assistant", "content": rejected}, "system": None, "tools": None,
            "meta": {"dataset": "prefs", "row": row}}


def test_both_sides_share_the_prompt_and_train_only_their_answer(tiny_tokenizer):
    records = [pair("Name a colour.", "Blue.", "I will not answer that question at all.", 0)]
    rows, quarantined = tokenize_pairs(records, TokenizeSettings(load_template("alpaca"), 256), tiny_tokenizer)
    assert not quarantined and len(rows) == 1
    row = rows[0]
    prompt_len = row["chosen_labels"].index(next(x for x in row["chosen_labels"] if x != IGNORE_INDEX))
    assert row["chosen_input_ids"][:prompt_len] == row["rejected_input_ids"][:prompt_len]
    assert all(x == IGNORE_INDEX for x in row["rejected_labels"][:prompt_len])
    for side in ("chosen", "rejected"):
        ids, labels = row[f"{side}_input_ids"], row[f"{side}_labels"]
        trained = [i for i, x in zip(ids, labels) if x != IGNORE_INDEX]
        assert trained == ids[prompt_len:] and trained[-1] == tiny_tokenizer.eos_token_id
        answer = records[0][side]["content"]
        assert tiny_tokenizer.decode(trained[:-1]).strip() == answer
    assert (row["source_row"], row["dataset"]) == (0, "prefs")


def test_a_pair_is_quarantined_whole_when_one_side_cannot_be_used(tiny_tokenizer):
    long_prompt = "word " * 600
    records = [pair("Fine.", "Yes.", "No.", 0), pair(long_prompt, "Yes.", "No.", 1)]
    settings = TokenizeSettings(load_template("alpaca"), 160, truncation="drop")
    rows, quarantined = tokenize_pairs(records, settings, tiny_tokenizer)
    assert [r["source_row"] for r in rows] == [0]
    assert len(quarantined) == 1 and quarantined[0]["row"] == 1
    assert quarantined[0]["reason"] == "chosen: longer than cutoff_len" and quarantined[0]["record"] is records[1]
