"""``train.batch_size: auto``: the probe picks the fastest micro-batch under the memory cap, leaves no trace on
the run (a run with auto equals a run with the size it chose), keeps the training fixed under
``rows_per_step``, and a resumed run keeps the first run's choice."""

from __future__ import annotations

import json

import pytest
import torch

from llm_finetune.pipelines.stages.nodes import stage_preflight
from llm_finetune.tokens.conversations import TokenizeSettings, tokenize_records
from llm_finetune.tokens.templates import load_template
from llm_finetune.training.auto_batch import CHOICE_FILE, GB, choose_batch_size, measure, pick, probe_sizes
from llm_finetune.training.engine import fit
from llm_finetune.training.objectives.language_model import LanguageModelObjective
from llm_finetune.training.settings import train_settings
from tests.conftest import alpaca_record

PARAMS = {"seed": 5, "precision": "fp32", "epochs": 1, "learning_rate": 5e-3, "lr_scheduler": "constant",
          "warmup_steps": 0, "eval_steps": 100, "logging_steps": 1, "save_steps": 0, "group_by_length": True,
          "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": "all-linear"}}


class FakeObjective:
    def length(self, row):
        return row["n"]


class FakePasses:
    """Pass times and peaks from a formula, recording the sizes run (to see which sizes the probe skipped)."""

    def __init__(self, seconds_per_row: dict[int, float], gb_per_row: float = 0.1):
        self.objective, self.seconds_per_row, self.gb_per_row = FakeObjective(), seconds_per_row, gb_per_row
        self.sizes = []

    def memory(self):
        return 1.0 * GB

    def run(self, rows):
        self.sizes.append(len(rows))
        return self.seconds_per_row[len(rows)] * len(rows), (1.0 + self.gb_per_row * len(rows)) * GB


ROWS = [{"n": 10} for _ in range(64)]


def test_probe_sizes_keep_what_the_data_and_the_step_allow():
    assert probe_sizes([32, 4, 8, 16, 128], rows=40, rows_per_step=None) == [4, 8, 16, 32]
    assert probe_sizes([4, 8, 16, 32, 64], rows=40, rows_per_step=48) == [4, 8, 16]
    assert probe_sizes([16, 32], rows=3, rows_per_step=None) == [16]  # fewer rows than any size: the smallest


def test_pick_takes_the_smallest_size_near_the_best_that_fits():
    measured = [{"batch_size": 4, "tokens_per_s": 100.0, "fits": True},
                {"batch_size": 8, "tokens_per_s": 140.0, "fits": True},
                {"batch_size": 16, "tokens_per_s": 145.0, "fits": True},
                {"batch_size": 32, "tokens_per_s": 200.0, "fits": False}]
    assert pick(measured, min_gain=0.05) == 8  # 16 is within 5% of 8: not worth halving the steps
    assert pick(measured, min_gain=0.0) == 16
    assert pick(measured[3:], min_gain=0.05) == 32  # nothing fits: the smallest tried


def test_measure_stops_when_larger_batches_get_slower():
    passes = FakePasses({4: 1.0, 8: 0.6, 16: 0.5, 32: 0.7, 64: 0.5})
    measured, stopped = measure(passes, ROWS, [10] * 64, [4, 8, 16, 32, 64], cap=100 * GB, min_gain=0.05,
                                grouped=True, seed=0)
    assert [m["batch_size"] for m in measured] == [4, 8, 16, 32] and "no more than min_gain faster" in stopped
    assert pick(measured, 0.05) == 16 and 64 not in passes.sizes
    assert passes.sizes == [4] * 3 + [8] * 3 + [16] * 3 + [32] * 3  # a warm-up pass at each size, two timed


def test_measure_stops_once_throughput_levels_off():
    """16 rows are 2% faster than 8: not worth the passes of 32 and 64 (each costs several training steps)."""
    passes = FakePasses({4: 1.0, 8: 0.5, 16: 0.49, 32: 0.1, 64: 0.1})
    measured, _ = measure(passes, ROWS, [10] * 64, [4, 8, 16, 32, 64], cap=100 * GB, min_gain=0.05, grouped=True,
                          seed=0)
    assert [m["batch_size"] for m in measured] == [4, 8, 16] and pick(measured, 0.05) == 8


def test_measure_does_not_run_a_size_projected_over_the_memory_cap():
    """1 GB before, +0.1 GB per row: 16 rows project to 2.6 GB, over a 2.5 GB cap, so they never run
    (on a CPU an over-large batch is the kernel killing the process, not an error to catch)."""
    passes = FakePasses({4: 1.0, 8: 0.5, 16: 0.2}, gb_per_row=0.1)
    measured, stopped = measure(passes, ROWS, [10] * 64, [4, 8, 16], cap=2.5 * GB, min_gain=0.05, grouped=True,
                                seed=0)
    assert [m["batch_size"] for m in measured] == [4, 8] and 16 not in passes.sizes and "memory cap" in stopped


def test_the_peak_is_projected_to_the_longest_rows():
    """Timed on median rows of 10 tokens, the longest row of 40 tokens makes a batch 4x the padded tokens."""
    lengths = [10] * 63 + [40]
    rows = [{"n": n} for n in lengths]
    measured, _ = measure(FakePasses({4: 1.0, 8: 1.0}, gb_per_row=0.1), rows, lengths, [4, 8], cap=100 * GB,
                          min_gain=0.05, grouped=True, seed=0)
    assert measured[0]["peak_gb"] == pytest.approx(1.0 + 0.4 * 4)


@pytest.fixture(scope="module")
def rows(tiny_tokenizer):
    records = [alpaca_record(f"Say {'owl ' * (i % 6 + 1)}please.", "owl " * (i % 9 + 1), row=i) for i in range(24)]
    tokens, _ = tokenize_records(records, TokenizeSettings(load_template("alpaca"), 128), tiny_tokenizer)
    return {"train": tokens[:16], "val": tokens[16:]}


def train(rows, model_dir, params, checkpoint_dir=None):
    return fit(LanguageModelObjective(model_dir), rows["train"], rows["val"], train_settings(params), checkpoint_dir)


def trained_weights(result):
    return {name: p.detach().clone() for name, p in result.model.named_parameters() if p.requires_grad}


def test_a_run_with_auto_equals_a_run_with_the_size_it_chose(rows, tiny_model_dir):
    auto = train(rows, tiny_model_dir, PARAMS | {"batch_size": "auto", "auto_batch": {"candidates": [2, 4, 8]}})
    choice = auto.info["auto_batch"]
    assert choice["batch_size"] == auto.info["batch_size"] in (2, 4, 8) and len(choice["measured"]) >= 2
    assert all(m["tokens_per_s"] > 0 and m["peak_gb"] > 0 for m in choice["measured"])
    fixed = train(rows, tiny_model_dir, PARAMS | {"batch_size": choice["batch_size"]})
    assert fixed.info["auto_batch"] is None and auto.history == fixed.history
    for name, weight in trained_weights(fixed).items():
        assert torch.equal(trained_weights(auto)[name], weight), name


def test_rows_per_step_keeps_the_training_whatever_the_micro_batch(rows, tiny_model_dir):
    """4 rows per step as 1 x 4 or 4 x 1: the same rows in each step (length groups of whole steps) and the
    loss over the step's trained tokens, so the losses agree."""
    whole = train(rows, tiny_model_dir, PARAMS | {"batch_size": 4, "lora": PARAMS["lora"] | {"dropout": 0.0}})
    split = train(rows, tiny_model_dir, PARAMS | {"batch_size": "auto", "lora": PARAMS["lora"] | {"dropout": 0.0},
                                                  "auto_batch": {"candidates": [1], "rows_per_step": 4}})
    assert (split.info["batch_size"], split.info["gradient_accumulation_steps"]) == (1, 4)
    train_losses = [(r["step"], r["loss"]) for r in whole.history if r["split"] == "train"]
    assert len(train_losses) == 4
    assert [r["step"] for r in split.history if r["split"] == "train"] == [step for step, _ in train_losses]
    for (_, expected), got in zip(train_losses, [r["loss"] for r in split.history if r["split"] == "train"]):
        assert got == pytest.approx(expected, rel=1e-4)


def test_the_choice_is_in_mlflow_and_the_checkpoints_and_read_back_on_resume(rows, tiny_model_dir, tmp_path):
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # an experiment of this store: an earlier test in the process may have left another one active
        with mlflow.start_run(experiment_id=mlflow.create_experiment("auto_batch")) as run:
            first = train(rows, tiny_model_dir, PARAMS | {"batch_size": "auto", "keep_checkpoints": True,
                                                          "save_steps": 2, "auto_batch": {"candidates": [2, 4]}},
                          tmp_path)
        params = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    finally:
        mlflow.set_tracking_uri(previous)
    assert params["train.batch_size"] == "auto" and params["train.batch_size_chosen"] == str(first.info["batch_size"])
    assert params["train.auto_batch.candidates"] == "[2, 4]"
    saved = json.loads((tmp_path / CHOICE_FILE).read_text())
    assert saved["batch_size"] == first.info["batch_size"] and not saved["from_checkpoint"]
    (tmp_path / CHOICE_FILE).write_text(json.dumps(saved | {"batch_size": 3}))  # as if the first run had chosen 3
    settings = train_settings(PARAMS | {"batch_size": "auto", "resume": True, "auto_batch": {"candidates": [2, 4]}})
    again = choose_batch_size(None, None, rows["train"], settings, "fp32", "train", tmp_path)
    assert again["batch_size"] == 3 and again["from_checkpoint"]  # read, not probed (no model to probe with)


@pytest.mark.parametrize("stage", ["kto", "grpo"])
def test_stages_whose_batch_is_the_method_refuse_auto_in_preflight(stage, tiny_model_dir):
    registry = {"tiny": {"source": "local", "path": str(tiny_model_dir)}}
    tokenize = {"template": "alpaca", "cutoff_len": 128, "loss_on": "assistant", "truncation": "truncate_response",
                "packing": "none"}
    params = {"train": {"batch_size": "auto"}} | ({"rewards": [{"name": "exact_match"}]} if stage == "grpo" else {})
    plan = [{"name": "demo_instructions", "kind": "conversation", "max_rows": None}]
    with pytest.raises(ValueError, match=f"{stage}.train.batch_size auto: its batch is"):
        stage_preflight(stage, plan, "tiny", registry, tokenize, params, {"undesirable": "keep"})


def test_settings_errors_name_the_key():
    for params, message in [({"batch_size": "automatic"}, "sft.train.batch_size: .*a whole number of rows >= 1"),
                            ({"auto_batch": {"min_gain": 0.1}}, "auto_batch applies to batch_size: auto"),
                            ({"batch_size": "auto", "distributed": {"processes": 2}}, "with distributed, set a number"),
                            ({"batch_size": "auto", "gradient_accumulation_steps": 2,
                              "auto_batch": {"rows_per_step": 8}}, "leave gradient_accumulation_steps at 1")]:
        with pytest.raises(ValueError, match=message):
            train_settings(params, "sft.train")
    with pytest.raises(ValueError, match="the global batch needs a number"):
        train_settings({"batch_size": "auto"}).global_batch_size


def test_tokenize_reports_padding_at_the_smallest_candidate_under_auto(tiny_model_dir, tmp_path):
    """The pad fraction is a preview before training chooses: under auto it is that of the smallest candidate,
    and says which size it is for."""
    from llm_finetune.models.materialize import prepare_base_model
    from llm_finetune.pipelines.tokenize.nodes import tokenize_train_split

    folder, _ = prepare_base_model("tiny", {"tiny": {"source": "local", "path": str(tiny_model_dir)}},
                                   tmp_path / "cache")
    tokenize = {"template": "alpaca", "cutoff_len": 128, "loss_on": "assistant", "truncation": "truncate_response",
                "packing": "none"}
    records = [alpaca_record(f"Say {'owl ' * (i % 6 + 1)}", "owl " * (i % 9 + 1), row=i) for i in range(12)]
    _, _, auto = tokenize_train_split(records, folder, tokenize, {"batch_size": "auto", "auto_batch":
                                                                  {"candidates": [8, 2]}}, tmp_path / "a")
    _, _, fixed = tokenize_train_split(records, folder, tokenize, {"batch_size": 2}, tmp_path / "b")
    assert auto["pad_fraction_batch_size"] == 2 and auto["pad_fraction"] == fixed["pad_fraction"]
