"""Blocks and perplexity of continued pretraining (``llm_finetune.tokens.blocks``) and the ``pt`` nodes."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from llm_finetune.io import ModelBundle
from llm_finetune.pipelines.pt.nodes import pack_blocks, perplexity_after, perplexity_before, train_pt_adapter
from llm_finetune.tokens.blocks import (
    BlockSettings,
    check_block_settings,
    document_ids,
    make_blocks,
)
from llm_finetune.tokens.conversations import IGNORE_INDEX
from llm_finetune.training.objectives.language_model import perplexity
from tests.conftest import REPO

DEMO_TEXT = REPO / "data" / "01_raw" / "demo_text.jsonl"
EOS = 99
DOCS = [[1, 2, 3, EOS], [4, 5, EOS], [6, 7, 8, 9, 10, EOS], [11, EOS], [12, 13, 14, EOS]]  # 19 tokens


@pytest.fixture(scope="module")
def pt_params() -> dict:
    return yaml.safe_load((REPO / "conf" / "base" / "parameters_pt.yml").read_text())["pt"]


@pytest.fixture(scope="module")
def demo_records() -> list[dict]:
    rows = [json.loads(line) for line in DEMO_TEXT.read_text().splitlines()]
    return [{"text": row["text"], "meta": {"id": row["id"]}} for row in rows]


def test_blocks_have_the_exact_size_and_lose_only_the_counted_remainder():
    rows, stats = make_blocks(DOCS, BlockSettings(block_size=4))
    stream = [t for doc in DOCS for t in doc]
    assert [len(r["input_ids"]) for r in rows] == [4, 4, 4, 4]
    assert [t for r in rows for t in r["input_ids"]] == stream[:16]
    assert all(r["labels"] == r["input_ids"] and "position_ids" not in r for r in rows)
    assert (stats["tokens"], stats["blocks"], stats["dropped_tokens"]) == (19, 4, 3)
    assert stats["padded_tokens"] == 0 and stats["trained_tokens"] == 4 * 3


def test_pad_keeps_the_remainder_as_a_short_block_unless_it_is_a_single_token():
    rows, stats = make_blocks(DOCS, BlockSettings(block_size=5, remainder="pad"))
    assert [len(r["input_ids"]) for r in rows] == [5, 5, 5, 4]
    assert [t for r in rows for t in r["input_ids"]] == [t for doc in DOCS for t in doc]
    assert (stats["dropped_tokens"], stats["padded_tokens"]) == (0, 1)
    rows, stats = make_blocks(DOCS, BlockSettings(block_size=18, remainder="pad"))
    assert [len(r["input_ids"]) for r in rows] == [18]
    assert (stats["dropped_tokens"], stats["padded_tokens"]) == (1, 0)


def test_without_cross_document_attention_positions_restart_and_document_starts_are_no_target():
    rows, _ = make_blocks(DOCS, BlockSettings(block_size=8, cross_document_attention=False))
    first, second = rows
    assert first["input_ids"] == [1, 2, 3, EOS, 4, 5, EOS, 6]
    assert first["position_ids"] == [0, 1, 2, 3, 0, 1, 2, 0]
    assert first["labels"] == [IGNORE_INDEX, 2, 3, EOS, IGNORE_INDEX, 5, EOS, IGNORE_INDEX]
    assert second["position_ids"] == [0, 1, 2, 3, 4, 0, 1, 0]  # the cut document restarts at 0


def test_documents_end_with_eos_and_get_bos_only_when_the_tokenizer_adds_it(tiny_tokenizer):
    texts = ["The owl hunts at night.", "Bread needs time to rise."]
    ids = document_ids(texts, tiny_tokenizer)
    assert all(doc[-1] == tiny_tokenizer.eos_token_id for doc in ids)
    assert [tiny_tokenizer.decode(doc[:-1]) for doc in ids] == texts
    rows, _ = make_blocks(ids, BlockSettings(block_size=4))
    stream = [t for r in rows for t in r["input_ids"]]
    assert stream[len(ids[0]) - 1] == tiny_tokenizer.eos_token_id  # EOS between the two documents

    from tokenizers.processors import TemplateProcessing

    with_bos = copy.deepcopy(tiny_tokenizer)
    bos = with_bos.bos_token_id
    with_bos.backend_tokenizer.post_processor = TemplateProcessing(single="<|im_start|> $A",
                                                                   special_tokens=[("<|im_start|>", bos)])
    assert all(doc[0] == bos and doc[1:] == plain for doc, plain in zip(document_ids(texts, with_bos), ids))


def test_block_settings_accept_the_defaults_and_name_what_is_wrong(pt_params):
    from llm_finetune.training.settings import train_settings

    assert check_block_settings(pt_params, 8192).block_size == pt_params["block_size"]
    with pytest.raises(ValueError, match="exceeds the model's 128 positions"):
        check_block_settings(pt_params, 128)
    with pytest.raises(ValueError, match="pt.remainder"):
        check_block_settings(pt_params | {"remainder": "wrap"})
    assert train_settings(pt_params["train"], "pt.train").max_steps == 24
    with pytest.raises(ValueError, match="pt.train.block_size: unknown key"):
        train_settings(pt_params["train"] | {"block_size": 8}, "pt.train")


def _reference_loss(model, ids: list[int], labels: list[int]) -> tuple[float, int]:
    """Token loss sum of one sequence from the model's full logits."""
    logits = model(torch.tensor([ids])).logits[0, :-1]
    targets = torch.tensor(labels[1:], dtype=torch.long)
    keep = targets != IGNORE_INDEX
    return float(F.cross_entropy(logits[keep], targets[keep], reduction="sum")), int(keep.sum())


@pytest.mark.parametrize("settings", [BlockSettings(16), BlockSettings(16, "pad"), BlockSettings(16, "pad", False)],
                         ids=["drop", "pad", "per_document"])
def test_perplexity_is_exp_of_the_token_averaged_loss(tiny_model_dir, tiny_tokenizer, demo_records, settings):
    from llm_finetune.models.loading import load_causal_lm

    rows, _ = make_blocks(document_ids([r["text"] for r in demo_records[:6]], tiny_tokenizer), settings)
    report = perplexity(tiny_model_dir, None, rows, batch_size=3, precision="fp32")
    model = load_causal_lm(tiny_model_dir).eval()
    total = count = 0
    with torch.inference_mode():
        for row in rows:
            starts = [i for i, p in enumerate(row.get("position_ids", [0])) if p == 0] + [len(row["input_ids"])]
            for a, b in zip(starts, starts[1:]):  # each document piece alone = the block-diagonal mask
                loss, n = _reference_loss(model, row["input_ids"][a:b], row["labels"][a:b])
                total, count = total + loss, count + n
    assert report["scored_tokens"] == count
    assert report["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)


def test_nodes_pack_once_and_a_short_training_lowers_held_out_perplexity(tiny_model_dir, demo_records, pt_params,
                                                                         tmp_path):
    params = pt_params | {"block_size": 32, "eval": {"batch_size": 16, "precision": "fp32", "max_blocks": None},
                          "train": pt_params["train"] | {"method": "full", "precision": "fp32", "max_steps": 15,
                                                         "batch_size": 8, "learning_rate": 1e-2, "eval_steps": 15,
                                                         "save_steps": 0}}
    splits = demo_records[:120], demo_records[120:135], demo_records[135:160]
    cache = tmp_path / "cache"
    *folders, stats = pack_blocks(*splits, tiny_model_dir, params, cache)
    assert pack_blocks(*splits, tiny_model_dir, params, cache)[:3] == tuple(folders)  # reused, not rebuilt
    assert stats["train"]["documents"] == 120 and stats["test"]["blocks"] > 0
    with pytest.raises(ValueError, match="pt.test_records hold 0 tokens"):
        pack_blocks(*splits[:2], [], tiny_model_dir, params, cache)

    before = perplexity_before(folders[2], tiny_model_dir, params)
    bundle, history, info = train_pt_adapter(folders[0], folders[1], tiny_model_dir, {"fingerprint": "tiny"}, params,
                                             tmp_path / "checkpoints")
    assert isinstance(bundle, ModelBundle) and info["global_steps"] == 15 and history
    bundle.write(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "pretraining.json").read_text())["block_size"] == 32
    after = perplexity_after(folders[2], tiny_model_dir, tmp_path / "adapter", params)
    assert after["scored_tokens"] == before["scored_tokens"]
    assert after["perplexity"] < 0.5 * before["perplexity"]  # ~600 (uniform over the vocabulary) -> ~160
