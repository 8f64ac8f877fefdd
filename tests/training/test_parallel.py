"""Objective losses under DDP, on two gloo processes: gradients come out all-reduced.

Each rank takes half of one batch and runs the objective's loss the way the engine does
(:func:`llm_finetune.training.parallel.through_wrapper`, a token-level loss divided by the trained
tokens of both ranks and multiplied by their number). After backward both ranks must hold the
same gradients, equal to one process's on the whole batch. Reaching past the wrapper (the code
before the fix) gives each rank its own gradients, which the last test shows the check catches.
"""

from __future__ import annotations

import gc
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from llm_finetune.tokens.conversations import IGNORE_INDEX, TokenizeSettings, tokenize_records
from llm_finetune.tokens.pairs import tokenize_pairs
from llm_finetune.tokens.templates import load_template
from llm_finetune.training.parallel import through_wrapper, unwrap
from llm_finetune.training.settings import TrainSettings
from tests.conftest import alpaca_record

SETTINGS = TrainSettings(precision="fp32", lora={"r": 4, "alpha": 8})


def _objective(kind: str, model_dir):
    from llm_finetune.models.loading import load_tokenizer

    pad = load_tokenizer(model_dir).pad_token_id
    if kind == "language_model":
        from llm_finetune.training.objectives.language_model import LanguageModelObjective

        return LanguageModelObjective(model_dir)
    from llm_finetune.training.objectives.reward import RewardObjective

    return RewardObjective(model_dir, pad)


def _rows(kind: str, tokenizer) -> list[dict]:
    answers = [" ".join(["yes"] * (1 + 3 * i)) for i in range(4)]
    records = [alpaca_record(f"Say yes {i} times.", answer) for i, answer in enumerate(answers)]
    if kind == "language_model":
        rows, _ = tokenize_records(records, TokenizeSettings(load_template("alpaca"), 128), tokenizer)
        return rows
    pairs = [{"prompt": r["messages"][:-1], "chosen": r["messages"][-1],
              "rejected": {"role": "assistant", "content": "no"}, "system": None, "tools": None, "meta": {}}
             for r in records]
    rows, _ = tokenize_pairs(pairs, TokenizeSettings(load_template("alpaca"), 128), tokenizer)
    return rows


def _loss(objective, model, rows: list[dict], trained_tokens: int | None, processes: int, reach_past: bool):
    """The batch loss as ObjectiveTrainer.compute_loss takes it."""
    batch = objective.collate([objective.row(r) for r in rows])
    scale = processes if objective.scaled_for_accumulation(model) else 1
    count = trained_tokens if objective.scaled_for_accumulation(model) else None
    if reach_past:  # the code before the fix: the inner model's pieces, bypassing the wrapper's forward
        loss, _ = objective.loss(unwrap(model), batch, count)
    else:
        loss, _ = through_wrapper(model, lambda inner: objective.loss(inner, batch, count))
    return loss * scale


def _gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in unwrap(model).named_parameters() if p.grad is not None}


def _rank(rank: int, kind: str, model_dir, store: str, out: str, reach_past: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.save(_rank_gradients(rank, kind, model_dir, reach_past), f"{out}.{rank}")
    finally:
        gc.collect()  # DDP's reducer must go before its process group: freed after, its destructor can deadlock
        dist.destroy_process_group()


def _rank_gradients(rank: int, kind: str, model_dir, reach_past: bool) -> dict:
    from llm_finetune.models.loading import load_tokenizer

    objective = _objective(kind, model_dir)
    rows = _rows(kind, load_tokenizer(model_dir))
    torch.manual_seed(0)
    model, _, _ = objective.build_model(SETTINGS, "fp32")
    model.train()
    wrapped = DistributedDataParallel(model, find_unused_parameters=False)
    trained = sum(sum(label != IGNORE_INDEX for label in r.get("labels", [])[1:]) for r in rows)
    half = rows[rank * 2:(rank + 1) * 2]
    _loss(objective, wrapped, half, trained, 2, reach_past).backward()
    return _gradients(wrapped)


def _two_ranks(kind: str, model_dir, tmp_path, reach_past: bool = False) -> list[dict]:
    out = str(tmp_path / f"{kind}-{reach_past}")
    mp.spawn(_rank, args=(kind, model_dir, str(tmp_path / f"store-{kind}-{reach_past}"), out, reach_past),
             nprocs=2, join=True)
    return [torch.load(f"{out}.{rank}") for rank in range(2)]


def _one_process(kind: str, model_dir, tiny_tokenizer) -> dict:
    objective = _objective(kind, model_dir)
    rows = _rows(kind, tiny_tokenizer)
    torch.manual_seed(0)
    model, _, _ = objective.build_model(SETTINGS, "fp32")
    model.train()
    trained = sum(sum(label != IGNORE_INDEX for label in r.get("labels", [])[1:]) for r in rows)
    _loss(objective, model, rows, trained, 1, False).backward()
    return _gradients(model)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.parametrize("kind", ["language_model", "reward"])
def test_ddp_gradients_are_all_reduced_and_equal_one_process_on_the_whole_batch(kind, tiny_model_dir,
                                                                                   tiny_tokenizer, tmp_path):
    rank0, rank1 = _two_ranks(kind, tiny_model_dir, tmp_path)
    whole = _one_process(kind, tiny_model_dir, tiny_tokenizer)
    assert rank0 and rank0.keys() == rank1.keys() == whole.keys()
    assert any(g.abs().sum() > 0 for g in whole.values())
    for name, gradient in whole.items():
        torch.testing.assert_close(rank0[name], rank1[name], atol=0, rtol=0, msg=name)
        torch.testing.assert_close(rank0[name], gradient, atol=1e-6, rtol=1e-4, msg=name)


def test_the_plain_model_is_left_as_it_is():
    model = torch.nn.Linear(2, 2)
    assert unwrap(model) is model
    assert through_wrapper(model, lambda inner: inner is model)


def test_reaching_past_the_wrapper_leaves_each_rank_its_own_gradients(tiny_model_dir, tmp_path):
    """The check above catches the bug the fix removes: without the wrapper's forward, no all-reduce."""
    rank0, rank1 = _two_ranks("language_model", tiny_model_dir, tmp_path, reach_past=True)
    assert any(not torch.equal(rank0[name], rank1[name]) for name in rank0)
    assert not os.environ.get("RANK")  # the test process itself is not a rank
