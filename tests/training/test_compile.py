"""``train.compile``: the decoder layers compiled for the training steps train the same model as eager mode (to
rounding), reproduce exactly run to run (bf16 on short rows with the matmul attention ``auto`` picks for them),
and are eager again after training; what compile needs fails in preflight."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from llm_finetune.tokens.conversations import TokenizeSettings, tokenize_records
from llm_finetune.tokens.templates import load_template
from llm_finetune.training import compile as compile_module
from llm_finetune.training.compile import decoder_layers
from llm_finetune.training.engine import fit
from llm_finetune.training.objectives.language_model import LanguageModelObjective
from llm_finetune.training.settings import train_settings
from tests.conftest import alpaca_record

PARAMS = {"seed": 5, "precision": "fp32", "epochs": 1, "batch_size": 4, "learning_rate": 5e-3,
          "lr_scheduler": "constant", "warmup_steps": 0, "eval_steps": 2, "logging_steps": 1, "save_steps": 0,
          "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}}


@pytest.fixture(scope="module")
def rows(tiny_tokenizer):
    records = [alpaca_record(f"Say {'owl ' * (i % 6 + 1)}please.", "owl " * (i % 9 + 1), row=i) for i in range(24)]
    tokens, _ = tokenize_records(records, TokenizeSettings(load_template("alpaca"), 128), tiny_tokenizer)
    return {"train": tokens[:16], "val": tokens[16:]}


def train(rows, model_dir, params):
    return fit(LanguageModelObjective(model_dir), rows["train"], rows["val"], train_settings(params))


def weights(result):
    return {name: p.detach().clone() for name, p in result.model.named_parameters() if p.requires_grad}


def test_compiled_layers_train_the_eager_model_reproducibly_and_are_eager_afterwards(rows, tiny_model_dir):
    """Batches of several lengths (length-grouped): one dynamic-shape graph, no recompilation per length."""
    torch._dynamo.reset()
    counters.clear()
    eager_run = train(rows, tiny_model_dir, PARAMS)
    compiled = train(rows, tiny_model_dir, PARAMS | {"compile": True})
    layers = decoder_layers(compiled.model)
    assert eager_run.info["compiled_layers"] == 0 and compiled.info["compiled_layers"] == len(layers) >= 2
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["recompiles"]
    assert len(compiled.history) == len(eager_run.history)
    for got, expected in zip(compiled.history, eager_run.history):
        assert (got["split"], got["step"]) == (expected["split"], expected["step"])
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    for name, weight in weights(eager_run).items():
        torch.testing.assert_close(weights(compiled)[name], weight, rtol=1e-3, atol=1e-5)

    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():  # a new grad mode would compile a new graph if the layers were still compiled
        compiled.model(input_ids=torch.tensor([rows["val"][0]["input_ids"]]))
    assert counters["stats"]["unique_graphs"] == graphs


def test_compiled_bf16_training_on_short_rows_takes_matmul_attention_and_reproduces_exactly(rows, tiny_model_dir):
    """bf16 on CPU, rows far below the bound: ``attention: auto`` picks the matmul attention inductor fuses;
    two runs give the same bits, and the model is back on its own attention afterwards."""
    bf16 = PARAMS | {"precision": "bf16", "compile": True}
    first, again = train(rows, tiny_model_dir, bf16), train(rows, tiny_model_dir, bf16)
    assert first.info["attention"] == "eager" and first.info["compiled_layers"] >= 2
    assert first.model.get_base_model().config._attn_implementation == "sdpa"
    assert again.history == first.history
    for name, weight in weights(first).items():
        assert torch.equal(weights(again)[name], weight), name
    eager_run = train(rows, tiny_model_dir, PARAMS | {"precision": "bf16"})
    assert eager_run.info["attention"] == "sdpa_fp32"
    for got, expected in zip(first.history, eager_run.history):
        assert got["loss"] == pytest.approx(expected["loss"], rel=2e-2)


def test_what_compile_needs_fails_in_preflight(monkeypatch):
    monkeypatch.setattr(compile_module.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match=r"sft.train.compile: torch.compile needs a C\+\+ compiler"):
        train_settings({"compile": True}, "sft.train")
    with pytest.raises(ValueError, match="sft.train.compile with sft.train.gradient_checkpointing"):
        train_settings({"compile": True, "gradient_checkpointing": True}, "sft.train")
    with pytest.raises(ValueError, match="trainer_args.torch_compile is set by compile"):
        train_settings({"trainer_args": {"torch_compile": True}})


def test_the_memory_budget_makes_the_compiled_layers_save_fewer_activation_bytes(rows, tiny_model_dir):
    from llm_finetune.models.precision import compute_context
    from llm_finetune.models.tuning import prepare_model
    from llm_finetune.tokens.packing import PadCollator
    from llm_finetune.training.compile import compiled_layers
    from llm_finetune.training.numerics import trained_token_loss

    model, _, _ = prepare_model(tiny_model_dir, "lora", PARAMS["lora"] | {"target_modules": "all-linear"}, {}, "fp32")
    batch = PadCollator(pad_token_id=0, attention_mask=False)(rows["train"][:4])
    saved = {}
    for budget in (1.0, 0.1):
        torch._dynamo.reset()
        sizes = []

        def pack(tensor):
            sizes.append(tensor.numel() * tensor.element_size())
            return tensor

        with compiled_layers(model, True, memory_budget=budget), compute_context(model, "fp32"):
            trained_token_loss(model, batch).backward()  # compiles: forward and backward graphs partitioned
            assert torch._functorch.config.activation_memory_budget == budget
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                trained_token_loss(model, batch).backward()
        saved[budget] = sum(sizes)
    assert torch._functorch.config.activation_memory_budget == 1.0  # restored on leaving
    assert saved[0.1] < 0.9 * saved[1.0], saved
