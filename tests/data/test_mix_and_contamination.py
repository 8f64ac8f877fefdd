"""Mixing datasets and finding train rows that leak into val / test."""

import pytest

from llm_finetune.data.contamination import find_contaminated_pairs, normalise, prompt_text
from llm_finetune.data.mix import mix_datasets


def recs(tag, n):
    return [{"id": f"{tag}{i}"} for i in range(n)]


def test_concat_keeps_selection_order():
    assert [r["id"] for r in mix_datasets({"a": recs("a", 2), "b": recs("b", 1)})] == ["a0", "a1", "b0"]


def test_interleave_is_seeded_and_follows_the_probabilities():
    data = {"a": recs("a", 3000), "b": recs("b", 3000)}
    mixed = mix_datasets(data, "interleave", [0.8, 0.2], seed=1)
    assert mixed == mix_datasets(data, "interleave", [0.8, 0.2], seed=1)
    assert mixed != mix_datasets(data, "interleave", [0.8, 0.2], seed=2)
    assert len(mixed) < 3800 and all(r["id"] != "a3000" for r in mixed)  # stopped when "a" ran out
    share_a = sum(r["id"].startswith("a") for r in mixed) / len(mixed)
    assert 0.76 < share_a < 0.84
    order_a = [r["id"] for r in mixed if r["id"].startswith("a")]
    assert order_a == [f"a{i}" for i in range(len(order_a))]


def test_interleave_all_exhausted_oversamples_the_small_dataset():
    mixed = mix_datasets({"big": recs("big", 100), "small": recs("s", 5)}, "interleave", [0.5, 0.5], seed=0,
                         stopping="all_exhausted")
    ids = [r["id"] for r in mixed]
    assert set(ids) >= {f"big{i}" for i in range(100)} and ids.count("s0") > 1


def test_bad_mix_configuration():
    with pytest.raises(ValueError, match="summing to 1"):
        mix_datasets({"a": recs("a", 1), "b": recs("b", 1)}, "interleave", [0.5, 0.6])
    with pytest.raises(ValueError, match="strategy 'zip'"):
        mix_datasets({"a": recs("a", 1)}, "zip")


def conv(prompt, answer="x", system=None):
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            "system": system, "tools": None, "meta": {}}


def test_prompt_text_covers_every_record_kind():
    assert prompt_text(conv("Q", system="S")) == "S\nQ"
    assert prompt_text({"prompt": [{"role": "user", "content": "Q"}], "chosen": {}, "rejected": {}}) == "Q"
    assert prompt_text({"text": "T"}) == "T"
    assert normalise("  Hello,   WORLD! ") == "hello world"


def test_exact_and_near_duplicates_are_found_and_numbers_count():
    train = [conv("Translate 'cat' into French."), conv("What is 6 x 7?"), conv("Name a prime number."),
             conv("Summarise the plot of Hamlet in two sentences for a ten year old reader.")]
    evaluation = {"val": [conv("translate 'CAT' into french")],
                  "test": [conv("What is 5 x 9?"),
                           conv("Summarise the plot of Hamlet in two sentences for a ten year old student."),
                           conv("Write a haiku about rain.")]}
    pairs, involved = find_contaminated_pairs(train, evaluation, threshold=0.8)
    assert [(p["split"], p["eval_index"], p["train_index"], p["match"]) for p in pairs] == [
        ("val", 0, 0, "exact"), ("test", 1, 3, "near")]
    assert 0.8 <= pairs[1]["similarity"] < 1 and involved == {0, 3}
    assert find_contaminated_pairs(train, evaluation, threshold=1.01)[1] == {0}
