"""Chat content given as a list of parts (OpenAI's layout, LLaMA-Factory's newer one with per-turn loss_weight).

Before, every such row was quarantined as "content is not a string".
"""

from __future__ import annotations

from llm_finetune.tokens.conversations import IGNORE_INDEX, TokenizeSettings, tokenize_records
from llm_finetune.tokens.templates import load_template
from tests.data.test_align import align


def test_openai_text_parts_are_joined():
    rows = [{"messages": [{"role": "user", "content": [{"type": "text", "text": "Add 2 "}, {"type": "text",
                                                                                           "text": "and 3."}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "5"}]}]}]
    aligned, quarantined = align(rows, "openai")
    assert quarantined == []
    assert [m["content"] for m in aligned[0]["messages"]] == ["Add 2 and 3.", "5"]


def test_an_image_part_is_quarantined_with_a_clear_reason():
    rows = [{"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                       {"type": "image_url", "image_url": {"url": "x.png"}}]},
                          {"role": "assistant", "content": "A cat."}]}]
    aligned, quarantined = align(rows, "openai")
    assert aligned == [] and [(q["field"], q["reason"]) for q in quarantined] == [
        ("messages[0].content[1]", "image_url part: multimodal content is not supported")]


def llamafactory_row() -> dict:
    """LLaMA-Factory's newer sharegpt layout: value parts and a turn with loss_weight 0."""
    def turn(role, text, **extra):
        return {"from": role, "value": [{"type": "text", "value": text}], **extra}

    return {"conversations": [turn("human", "Say A."), turn("gpt", "A", loss_weight=0), turn("human", "Say B."),
                              turn("gpt", "B", loss_weight=1)]}


def test_a_turn_with_loss_weight_0_is_context_never_a_target(tiny_tokenizer):
    aligned, quarantined = align([llamafactory_row()], "sharegpt")
    assert quarantined == []
    messages = aligned[0]["messages"]
    assert [m["content"] for m in messages] == ["Say A.", "A", "Say B.", "B"]
    assert [m.get("train", True) for m in messages] == [True, False, True, True]
    settings = TokenizeSettings(load_template("chatml"), 256, loss_on="assistant")
    (row,), _ = tokenize_records(aligned, settings, tiny_tokenizer)
    trained = tiny_tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX])
    assert trained.strip().startswith("B") and "A" not in trained.replace("<|im_end|>", "")
    everything = TokenizeSettings(load_template("chatml"), 256, loss_on="all")  # prompts trained, that turn still not
    (row_all,), _ = tokenize_records(aligned, everything, tiny_tokenizer)
    untrained = [t for t, label in zip(row_all["input_ids"], row_all["labels"]) if label == IGNORE_INDEX]
    assert tiny_tokenizer.decode(untrained).strip().startswith("A")


def test_a_loss_weight_other_than_0_or_1_is_a_counted_defect():
    row = llamafactory_row()
    row["conversations"][1]["loss_weight"] = 0.5
    aligned, quarantined = align([row], "sharegpt")
    assert aligned == [] and [(q["field"], q["reason"]) for q in quarantined] == [
        ("conversations[1].loss_weight", "loss_weight is not 0 or 1")]
