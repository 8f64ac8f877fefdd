"""A run killed mid-epoch resumes from its last checkpoint and ends exactly like an uninterrupted run.

The same for every objective of the engine (language model, reward model, DPO), and with early
stopping: its best loss and patience counter are in the checkpoint, so a resumed run stops at
the step the uninterrupted one stopped at.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from transformers import TrainerCallback

from llm_finetune.tokens.conversations import TokenizeSettings, tokenize_records
from llm_finetune.tokens.templates import load_template
from llm_finetune.training.engine import fit
from llm_finetune.training.settings import train_settings
from tests.conftest import DEMO_DATA, REPO, alpaca_record

PARAMS = {"seed": 11, "precision": "fp32", "epochs": 2, "max_steps": None, "batch_size": 4,
          "gradient_accumulation_steps": 1, "learning_rate": 5e-3, "weight_decay": 0.01, "lr_scheduler": "cosine",
          "warmup_steps": 2, "max_grad_norm": 1.0, "group_by_length": True, "eval_steps": 5, "logging_steps": 1,
          "save_steps": 4, "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": "all-linear"}}
# evaluations at 2, 4, 6, 8: the first sets the best loss, none after improves by 1e9, so patience 3 stops at 8
EARLY = PARAMS | {"eval_steps": 2, "save_steps": 2, "early_stopping": {"patience": 3, "min_delta": 1e9}}


class KillAfterSave(TrainerCallback):
    """SIGKILL this process right after the checkpoint of ``step`` is on disk: a hard crash."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def objective_for(kind: str, model_dir: str):
    from llm_finetune.models.loading import load_tokenizer
    from llm_finetune.training.objectives.dpo import LossSettings, PreferenceObjective
    from llm_finetune.training.objectives.kto import KtoObjective, KtoSettings
    from llm_finetune.training.objectives.language_model import LanguageModelObjective
    from llm_finetune.training.objectives.reward import RewardObjective

    pad = load_tokenizer(model_dir).pad_token_id
    return {"language_model": lambda: LanguageModelObjective(model_dir),
            "reward": lambda: RewardObjective(model_dir, pad),
            "dpo": lambda: PreferenceObjective(model_dir, None, LossSettings(), pad),
            "kto": lambda: KtoObjective(model_dir, None, KtoSettings(beta=0.5), pad)}[kind]()


def run(kind: str, rows: dict, model_dir: str, params: dict, checkpoint_dir, callbacks=()):
    return fit(objective_for(kind, model_dir), rows["train"], rows["val"], train_settings(params), checkpoint_dir,
               callbacks)


def crash_run(kind: str, rows_file: str, model_dir: str, checkpoint_dir: str, params_json: str, step: int) -> None:
    """Entry point of the child process that gets killed."""
    run(kind, json.loads(open(rows_file).read()), model_dir, json.loads(params_json), checkpoint_dir,
        [KillAfterSave(step)])


def trained_state(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def rows(tiny_model_dir, tiny_tokenizer):
    """24 train / 6 val rows per objective: 6 steps per epoch, 12 in all (a kill at step 8 is mid-epoch 2)."""
    from llm_finetune.tokens.labelled import tokenize_labelled, with_kl_partners
    from llm_finetune.training.objectives.dpo import build_policy, pair_logps, with_reference
    from llm_finetune.training.objectives.kto import labelled_logps
    from tests.training.objectives.test_dpo import preference_pairs
    from tests.training.objectives.test_kto import labelled_records

    demo = json.loads(DEMO_DATA.read_text())[:30]
    records = [alpaca_record(r["instruction"], r["output"], r["input"]) for r in demo]
    tokens, _ = tokenize_records(records, TokenizeSettings(load_template("alpaca"), 128), tiny_tokenizer)
    pairs = preference_pairs(tiny_tokenizer, 30)
    policy = build_policy(tiny_model_dir, None, {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
                          "fp32")
    references = pair_logps(policy, pairs, tiny_tokenizer.pad_token_id, reference=True)
    dpo = with_reference(pairs, references)
    labelled, _ = tokenize_labelled(labelled_records(30), TokenizeSettings(load_template("alpaca"), 128), tiny_tokenizer)
    labelled = with_kl_partners(labelled[:24], 4, 128) + with_kl_partners(labelled[24:], 4, 128)
    kto_reference = labelled_logps(policy, labelled, tiny_tokenizer.pad_token_id, reference=True)
    kto = [{k: r[k] for k in ("input_ids", "labels", "kl_input_ids", "kl_labels", "label")} | {"ref_logp": a, "ref_kl_logp": b}
           for r, a, b in zip(labelled, kto_reference["logps"], kto_reference["kl_logps"])]
    return {"language_model": {"train": tokens[:24], "val": tokens[24:]},
            "reward": {"train": pairs[:24], "val": pairs[24:]}, "dpo": {"train": dpo[:24], "val": dpo[24:]},
            "kto": {"train": kto[:24], "val": kto[24:]}}


@pytest.mark.parametrize("kind, params, kill_at, stops_at", [
    ("language_model", PARAMS, 8, 12), ("reward", PARAMS, 8, 12), ("dpo", PARAMS, 8, 12), ("kto", PARAMS, 8, 12),
    ("language_model", EARLY, 6, 8), ("reward", EARLY, 6, 8),
], ids=["sft", "reward", "dpo", "kto", "sft-early-stopping", "reward-early-stopping"])
def test_killed_run_resumes_to_the_same_weights_and_losses(kind, params, kill_at, stops_at, rows, tiny_model_dir,
                                                           tmp_path):
    data = rows[kind]
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(data))
    straight = run(kind, data, str(tiny_model_dir), params, tmp_path / "straight")
    assert straight.info["global_steps"] == stops_at and straight.info["resumed_from"] is None
    assert straight.info["stopped_early"] == (stops_at < 12)
    assert not (tmp_path / "straight").exists()  # checkpoints removed after success

    crashed = tmp_path / "crashed"
    child = subprocess.run([sys.executable, "-c", "from tests.training.test_engine_resume import crash_run; "
                            f"crash_run({kind!r}, {str(rows_file)!r}, {str(tiny_model_dir)!r}, {str(crashed)!r}, "
                            f"{json.dumps(params)!r}, {kill_at})"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert sorted(p.name for p in crashed.iterdir())[-1] == f"checkpoint-{kill_at}"

    resumed = run(kind, data, str(tiny_model_dir), params | {"resume": True}, crashed)
    assert resumed.info["resumed_from"] == f"checkpoint-{kill_at}"
    assert resumed.info["global_steps"] == stops_at
    assert resumed.history == straight.history  # every logged train / val figure, before and after the kill
    expected = trained_state(straight.model)
    assert expected and expected.keys() == trained_state(resumed.model).keys()
    assert all(torch.equal(expected[name], weight) for name, weight in trained_state(resumed.model).items())
