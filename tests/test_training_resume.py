"""A run killed mid-epoch resumes from its last checkpoint and ends exactly like an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys

import torch
from transformers import TrainerCallback

from llm_finetune.templates import load_template
from llm_finetune.tokenization import TokenizeSettings, tokenize_records
from llm_finetune.training import train_model
from tests.conftest import DEMO_DATA, REPO, alpaca_record

PARAMS = {"seed": 11, "precision": "fp32", "epochs": 2, "max_steps": 0, "batch_size": 4,
          "gradient_accumulation_steps": 1, "learning_rate": 5e-3, "weight_decay": 0.01, "lr_scheduler": "cosine",
          "warmup_steps": 2, "max_grad_norm": 1.0, "group_by_length": True, "eval_steps": 5, "logging_steps": 1,
          "save_steps": 4, "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": "all-linear"}}


class KillAfterSave(TrainerCallback):
    """SIGKILL this process right after the checkpoint of ``step`` is on disk: a hard crash."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def crash_run(rows_file: str, model_dir: str, checkpoint_dir: str, step: int) -> None:
    """Entry point of the child process that gets killed."""
    rows = json.loads(open(rows_file).read())
    train_model(rows["train"], rows["val"], model_dir, PARAMS, callbacks=[KillAfterSave(step)],
               checkpoint_dir=checkpoint_dir)


def lora_state(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def test_killed_run_resumes_to_the_same_adapter_and_losses(tiny_model_dir, tiny_tokenizer, tmp_path):
    demo = json.loads(DEMO_DATA.read_text())[:30]
    records = [alpaca_record(r["instruction"], r["output"], r["input"]) for r in demo]
    tokens, _ = tokenize_records(records, TokenizeSettings(load_template("alpaca"), 128), tiny_tokenizer)
    train, val = tokens[:24], tokens[24:]  # 6 steps per epoch, 12 in all: the kill at step 8 is mid-epoch 2
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps({"train": train, "val": val}))

    model, _, history, info = train_model(train, val, tiny_model_dir, PARAMS, checkpoint_dir=tmp_path / "straight")
    assert info["global_steps"] == 12 and info["resumed_from"] is None
    assert not (tmp_path / "straight").exists()  # checkpoints removed after success

    crashed = tmp_path / "crashed"
    child = subprocess.run([sys.executable, "-c", "from tests.test_training_resume import crash_run; "
                            f"crash_run({str(rows_file)!r}, {str(tiny_model_dir)!r}, {str(crashed)!r}, 8)"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert sorted(p.name for p in crashed.iterdir()) == ["checkpoint-4", "checkpoint-8"]

    resumed, _, resumed_history, resumed_info = train_model(train, val, tiny_model_dir, PARAMS | {"resume": True},
                                                           checkpoint_dir=crashed)
    assert resumed_info["resumed_from"] == "checkpoint-8" and resumed_info["global_steps"] == 12
    assert resumed_history == history  # every logged train / val loss, before and after the kill
    expected = lora_state(model)
    assert expected and all(torch.equal(expected[name], weight) for name, weight in lora_state(resumed).items())
