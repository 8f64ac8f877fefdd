"""The reward model on the tiny random Llama: reward index, loss, training, evaluation, saving, judging."""

import json
import random

import pytest
import torch
import torch.nn.functional as F

from llm_finetune.evaluation.judging.reward_judge import (
    add_reward_scores,
    check_reward_judge,
    resolve_reward_model,
    score,
    score_records,
)
from llm_finetune.evaluation.judging.run import check_judges, normalize_rows, run_judges
from llm_finetune.io import ModelBundle
from llm_finetune.models.reward import load_reward_model, prepare_reward_model, sequence_rewards
from llm_finetune.pipelines.rm.nodes import evaluate_rm, train_rm
from llm_finetune.tokens.conversations import TokenizeSettings
from llm_finetune.tokens.pairs import tokenize_pairs
from llm_finetune.tokens.templates import load_template
from llm_finetune.training.engine import fit
from llm_finetune.training.objectives.reward import PairCollator, RewardObjective, pairwise_loss, ranking_report
from llm_finetune.training.settings import train_settings
from tests.conftest import DEMO_DATA

LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
TRAIN = {"seed": 7, "precision": "fp32", "epochs": 1, "max_steps": 30, "batch_size": 4, "learning_rate": 5e-3,
         "lr_scheduler": "constant", "warmup_steps": 0, "eval_steps": 10, "logging_steps": 5, "eval_before_training": True,
         "lora": LORA}
TOKENIZE = {"template": "alpaca", "cutoff_len": 256, "loss_on": "assistant", "truncation": "truncate_response",
            "packing": "none"}
POLITE = ("Thank you.", "Glad to help!", "Hope this helps.", "Kind regards.")
RUDE = ("Go away, stupid.", "Whatever, idiot.", "Stop asking me.", "Ugh, figure it out.")
RM = {"margin": 0.0, "train": TRAIN, "evaluate": {"batch_size": 8, "precision": "fp32", "before_training": True}}


def preference_record(row: dict, chosen: str, rejected: str) -> dict:
    user = f"{row['instruction']}\n\n{row['input']}" if row["input"] else row["instruction"]
    return {"prompt": [{"role": "user", "content": user}], "chosen": {"role": "assistant", "content": chosen},
            "rejected": {"role": "assistant", "content": rejected}, "system": None, "tools": None,
            "meta": {"instruction": row["instruction"], "input": row["input"]}}


@pytest.fixture(scope="module")
def pairs(tiny_tokenizer):
    """Separable pairs: the chosen answer ends politely, the rejected one rudely (phrases drawn per pair,
    so an untrained model ranks them by chance)."""
    rows = [r for r in json.loads(DEMO_DATA.read_text()) if len(r["instruction"] + r["input"] + r["output"]) < 100]
    draw = random.Random(0)
    records = [preference_record(r, f"{r['output']} {draw.choice(POLITE)}", f"{r['output']} {draw.choice(RUDE)}")
               for r in rows[:72]]
    settings = TokenizeSettings(load_template("alpaca"), TOKENIZE["cutoff_len"])
    tokenized, quarantined = tokenize_pairs(records, settings, tiny_tokenizer)
    assert not quarantined and not any(row["truncated"] for row in tokenized)
    return {"train": tokenized[:48], "val": tokenized[48:56], "test": tokenized[56:], "records": records}


@pytest.fixture(scope="module")
def saved_rm(tmp_path_factory, tiny_model_dir, pairs):
    """The ``rm.train`` node's output, written as the catalog writes it."""
    bundle, history = train_rm(pairs["train"], pairs["val"], tiny_model_dir, {"source": "tiny"}, TOKENIZE, RM,
                              tmp_path_factory.mktemp("rm-checkpoints"))
    folder = tmp_path_factory.mktemp("rm") / "reward_model"
    bundle.write(folder)
    return folder, bundle, history


def test_reward_is_read_at_length_minus_one_even_when_the_last_token_is_the_pad_eos(tiny_model_dir, tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.pad_token_id == eos  # the SmolLM2 trap: pad == EOS
    model, _, _ = prepare_reward_model(tiny_model_dir, LORA, "fp32", eos, seed=3)
    model.eval()
    short, long = [5, 6, 7, eos], [5, 6, 7, 8, 9, eos]
    batch = PairCollator(eos)([{"chosen_input_ids": long, "rejected_input_ids": short}])
    assert batch["input_ids"].tolist() == [long, short + [eos, eos]] and batch["lengths"].tolist() == [6, 4]
    with torch.no_grad():
        rewards = sequence_rewards(model, batch["input_ids"], batch["lengths"])
        alone = sequence_rewards(model, torch.tensor([short]), torch.tensor([4]))
        classifier = model.get_base_model()
        hidden = classifier.model(input_ids=torch.tensor([short])).last_hidden_state
        at_eos = classifier.score(hidden[0, 3]).item()
        pooled_by_pad_search = classifier(input_ids=torch.tensor([short])).logits.item()
    assert rewards[1].item() == pytest.approx(alone.item(), abs=1e-5)  # padding does not move a reward
    assert rewards[1].item() == pytest.approx(at_eos, abs=1e-5)  # read at the final EOS, index length - 1
    assert pooled_by_pad_search != pytest.approx(at_eos, abs=1e-4)  # transformers' pooling skips that EOS


def test_pairwise_loss_and_metrics_on_known_rewards():
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.5, 1.0, 1.0])
    diff = chosen - rejected
    assert pairwise_loss(chosen, rejected).item() == pytest.approx(-F.logsigmoid(diff).mean().item())
    assert pairwise_loss(chosen, rejected, margin=0.7).item() == pytest.approx(
        -F.logsigmoid(diff - 0.7).mean().item())
    metrics = ranking_report(chosen, rejected)
    assert metrics["accuracy"] == pytest.approx(1 / 3, abs=1e-4)  # a tie is not a win
    assert metrics["mean_margin"] == pytest.approx(diff.mean().item(), abs=1e-4)
    assert (metrics["mean_chosen_reward"], metrics["mean_rejected_reward"], metrics["pairs"]) == (1.0, 0.8333, 3)


def test_training_on_separable_pairs_beats_chance_and_is_reproducible(tiny_model_dir, pairs, saved_rm):
    _, bundle, history = saved_rm
    model, info = bundle.model, bundle.files["train_info.json"]
    val = [row for row in history if row["split"] == "val"]
    assert [row["step"] for row in val] == [0, 10, 20, 30]
    assert val[-1]["accuracy"] >= 0.875 and val[-1]["loss"] < val[0]["loss"]
    assert info["global_steps"] == 30 and 0 < info["trainable_parameters"] < info["total_parameters"]
    assert any("score.modules_to_save" in name for name, p in model.named_parameters() if p.requires_grad)
    objective = RewardObjective(tiny_model_dir, bundle.tokenizer.pad_token_id)
    again = fit(objective, pairs["train"], pairs["val"], train_settings(TRAIN | {"max_steps": 10})).history
    def numbers(rows):
        return [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in rows if row["step"] <= 10]
    assert numbers(again) == numbers(history)  # constant LR: the first 10 steps are the same steps


def test_bf16_keeps_the_seeded_head_and_trains_lora_and_head_in_fp32(tiny_model_dir, tiny_tokenizer):
    fp32, _, _ = prepare_reward_model(tiny_model_dir, LORA, "fp32", tiny_tokenizer.pad_token_id, seed=5)
    bf16, _, _ = prepare_reward_model(tiny_model_dir, LORA, "bf16", tiny_tokenizer.pad_token_id, seed=5)
    head = "base_model.model.score.modules_to_save.default.weight"
    assert torch.equal(dict(fp32.named_parameters())[head], dict(bf16.named_parameters())[head])
    assert {p.dtype for p in bf16.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in bf16.parameters() if not p.requires_grad} == {torch.bfloat16}


def test_saved_reward_model_reloads_and_evaluates_on_held_out_pairs(tmp_path, tiny_model_dir, pairs, saved_rm):
    folder, bundle, history = saved_rm
    assert {"adapter_config.json", "adapter_model.safetensors", "prompt_template.json", "reward_model.json",
            "training_params.json", "train_info.json", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    metrics = evaluate_rm(pairs["test"], folder, tiny_model_dir, RM)
    assert metrics["test"]["pairs"] == 16 and metrics["test"]["accuracy"] >= 0.8
    assert metrics["test"]["mean_margin"] > 0 and metrics["accuracy_gain"] > 0.2
    assert 0.2 <= metrics["before_training"]["accuracy"] <= 0.8
    assert metrics["train"]["global_steps"] == 30
    batch = PairCollator(bundle.tokenizer.pad_token_id)(pairs["test"][:4])
    reloaded, tokenizer = load_reward_model(folder)  # base model found through reward_model.json
    with torch.no_grad():
        expected = sequence_rewards(bundle.model, **batch)
        assert torch.allclose(sequence_rewards(reloaded, **batch), expected, atol=1e-5)
    in_bf16, _ = load_reward_model(folder, "bf16")  # base in bf16, LoRA and head as trained (fp32)
    assert {p.dtype for n, p in in_bf16.named_parameters() if "lora_" in n or "modules_to_save" in n} == {torch.float32}
    full = tmp_path / "full"  # a whole sequence classifier (a reward model from elsewhere) loads too
    reloaded.merge_and_unload().save_pretrained(full)
    tokenizer.save_pretrained(full)
    with torch.no_grad():
        assert torch.allclose(sequence_rewards(load_reward_model(full)[0], **batch), expected, atol=1e-4)
    with pytest.raises(ValueError, match="not a reward model"):
        load_reward_model(tiny_model_dir)  # a causal LM: no score head to read


def test_score_ranks_polite_answers_first_and_reports_unscorable_rows(saved_rm, pairs):
    folder, _, _ = saved_rm
    held_out = pairs["records"][56:60]
    prompts = [record["prompt"] for record in held_out]
    chosen = score(folder, prompts, [r["chosen"]["content"] for r in held_out], precision="fp32")
    rejected = score(folder, prompts, [r["rejected"]["content"] for r in held_out], precision="fp32")
    assert sum(c > r for c, r in zip(chosen, rejected)) >= 3
    results = score_records(folder, [{"messages": [{"role": "user", "content": "Hi"}], "meta": {}}], precision="fp32")
    assert results[0]["score"] is None and "template cannot render" in results[0]["error"]


def test_reward_model_judge_adds_scores_and_resolves_latest(tmp_path, saved_rm, monkeypatch):
    folder, _, _ = saved_rm
    rows = [{"instruction": "Name a colour.", "input": "", "output": "Blue.", "model_response": f"Blue. {ending}"}
            for ending in ("Thank you.", "Go away, stupid.")]
    judge = {"reference": {}, "reward_model": {"path": str(folder), "precision": "fp32"}}
    assert check_judges(judge, {}, {})["reward_model"]["path"] == str(folder)
    judged, summary = run_judges(normalize_rows(rows, "rows"), judge, {}, None)
    assert judged[0]["reward_score"] > judged[1]["reward_score"] and judged[0]["reward_error"] is None
    assert summary["reward_scored"] == 2 and summary["reward_failed"] == 0 and "exact_match" in summary
    root = tmp_path / "data/06_models/rm/reward_model"
    for version in ("2026-01-01T00.00.00.000Z", "2026-02-01T00.00.00.000Z"):
        ModelBundle(files={"adapter_config.json": "{}"}).write(root / version / "reward_model")
    assert resolve_reward_model("latest", root) == root / "2026-02-01T00.00.00.000Z" / "reward_model"
    monkeypatch.chdir(tmp_path / "data")  # no project here: `latest` finds nothing and says what to run
    with pytest.raises(ValueError, match="kedro run --pipeline rm"):
        check_reward_judge("latest")
    with pytest.raises(ValueError, match="unknown option"):
        add_reward_scores([], {}, {"path": str(folder), "bacth_size": 2})
