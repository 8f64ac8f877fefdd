"""Packing: no sample attends to another; loss and logits are the same packed or alone."""

import pytest
import torch

from llm_finetune.tokens.conversations import IGNORE_INDEX
from llm_finetune.tokens.packing import (
    FlatteningCollator,
    PadCollator,
    pack_rows,
    padding_stats,
)


def sample(length, start, trained_from=2):
    ids = list(range(start, start + length))
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * trained_from + ids[trained_from:]}


def test_greedy_keeps_order_and_bfd_fills_bins_tighter():
    rows = [sample(n, 10) for n in (6, 5, 5, 4, 3, 3, 2)]
    greedy = pack_rows(rows, "greedy", capacity=10)
    bfd = pack_rows(rows, "bfd", capacity=10)
    assert [r["sample_lengths"] for r in greedy] == [[6], [5, 5], [4, 3, 3], [2]]
    assert len(bfd) == 3 and sorted(sum(r["sample_lengths"]) for r in bfd) == [8, 10, 10]
    for packed in (greedy, bfd):
        assert sum(len(r["input_ids"]) for r in packed) == 28
        assert all(len(r["input_ids"]) <= 10 for r in packed)
        for row in packed:
            starts = [sum(row["sample_lengths"][:k]) for k in range(len(row["sample_lengths"]))]
            assert [row["position_ids"][s] for s in starts] == [0] * len(starts)
            assert all(row["labels"][s] == IGNORE_INDEX for s in starts)
    with pytest.raises(ValueError, match="longer than the packing capacity"):
        pack_rows([sample(11, 0)], "bfd", capacity=10)


def test_padding_stats():
    stats = padding_stats([10, 10, 2, 2], batch_size=2, capacity=10)
    assert stats["packing_efficiency"] == 0.6 and stats["pad_fraction_length_grouped"] == 0.0
    assert 0 <= stats["pad_fraction"] <= 0.4


@pytest.mark.parametrize("mode", ["greedy", "bfd"])
def test_a_sample_has_the_same_logits_and_loss_packed_or_alone(tiny_model_dir, mode):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    rows = []
    for length in (17, 9, 23, 12, 5, 30):
        ids = torch.randint(5, 500, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]})
    packed = pack_rows(rows, mode, capacity=48)
    assert len(packed) < len(rows)
    collate = PadCollator(pad_token_id=0)
    with torch.no_grad():
        batch = collate(packed)
        assert "attention_mask" not in batch
        assert batch["use_cache"] is False  # a KV cache would switch the block-diagonal mask off
        packed_logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        packed_loss = model(**batch).loss
        alone_losses, trained = [], 0
        for row_index, row in enumerate(packed):
            offset = 0
            for length in row["sample_lengths"]:
                ids = row["input_ids"][offset:offset + length]
                original = next(r for r in rows if r["input_ids"] == ids)
                alone = model(input_ids=torch.tensor([ids]), labels=torch.tensor([original["labels"]]))
                torch.testing.assert_close(packed_logits[row_index, offset:offset + length], alone.logits[0],
                                           atol=1e-5, rtol=1e-5)
                n = sum(label != IGNORE_INDEX for label in original["labels"][1:])
                alone_losses.append(alone.loss * n)
                trained += n
                offset += length
    torch.testing.assert_close(packed_loss, torch.stack(alone_losses).sum() / trained, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["none", "bfd"])
def test_a_flattened_batch_gives_every_sample_its_loss_alone(tiny_model_dir, mode):
    """FlashAttention-2's layout (one row, position ids restarting per sample, no padding), run here through
    transformers' SDPA path, which reads the same position ids as the varlen kernel's cu_seqlens."""
    from transformers import AutoModelForCausalLM

    from llm_finetune.training.numerics import sequence_logps

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(1)
    rows = []
    for length in (17, 9, 23, 12, 5, 30):
        ids = torch.randint(5, 500, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": ids[:1] + [IGNORE_INDEX] * 2 + ids[3:]})  # label at 0: masked
    batch = FlatteningCollator()(pack_rows(rows, mode, capacity=48))
    total = sum(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (1, total) and "attention_mask" not in batch  # no padding, no mask
    assert int((batch["position_ids"] == 0).sum()) == len(rows)  # every sample starts its own positions
    assert all(batch["labels"][0, i] == IGNORE_INDEX for i in (batch["position_ids"][0] == 0).nonzero()[:, 0])
    with torch.no_grad():
        targets = batch["labels"][0, 1:] != IGNORE_INDEX
        flat_logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                            use_cache=batch["use_cache"]).logits[0, :-1][targets]
        flat_sum = torch.nn.functional.cross_entropy(flat_logits, batch["labels"][0, 1:][targets], reduction="sum")
        alone = [sequence_logps(model, {"input_ids": torch.tensor([r["input_ids"]]),
                                        "labels": torch.tensor([[IGNORE_INDEX] + r["labels"][1:]])})[0]
                 for r in rows]
    torch.testing.assert_close(flat_sum, -torch.cat(alone).sum(), atol=1e-4, rtol=1e-5)
    padded = PadCollator(pad_token_id=0)(rows)  # the same rows batched with padding: the flattened batch has none
    assert padded["input_ids"].numel() > batch["input_ids"].numel()
