"""End-to-end `kedro run --pipeline sft --env test` in a scratch copy of the project.

Real components throughout: the kedro CLI, the catalog, kedro-mlflow with its sqlite store,
peft, a tiny random Llama built by the fixture, and (for the LLM judge) a local HTTP server
on 127.0.0.1 that speaks the OpenAI-compatible protocol.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import REPO, real_data
from tests.evaluation.judging.fake_servers import FakeJudge, closed_port_url, serve

pytestmark = pytest.mark.e2e
KEDRO = str(Path(sys.executable).with_name("kedro"))


def scratch_project(tmp_path_factory, name: str) -> Path:
    """A scratch project with pyproject and conf and an empty data/01_raw (runs write only here)."""
    root = tmp_path_factory.mktemp(name)
    shutil.copy(REPO / "pyproject.toml", root)
    (root / "src").mkdir()  # kedro wants the folder; the package itself is installed in the venv
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "data" / "01_raw").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A scratch project with the demo data."""
    root = scratch_project(tmp_path_factory, "project")
    for name in ("demo_instructions.json", "demo_responses.json"):
        shutil.copy(REPO / "data" / "01_raw" / name, root / "data" / "01_raw")
    return root


def kedro(project: Path, *args: str, params: dict | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
                        "COLUMNS": "400"}  # wide rich logs: messages stay on one line
    command = [KEDRO, *args]
    if params:
        command += ["--params", ",".join(f"{k}={v}" for k, v in params.items())]
    return subprocess.run(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)


def latest(project: Path, relative: str):
    folder = project / relative
    version = sorted(p.name for p in folder.iterdir())[-1]
    text = (folder / version / folder.name).read_text()
    return [json.loads(line) for line in text.splitlines()] if folder.suffix == ".jsonl" else json.loads(text)


def versions(project: Path, relative: str) -> list[str]:
    folder = project / relative
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def two_runs(project, tiny_model_dir):
    params = {"model_registry.tiny-llama.path": str(tiny_model_dir)}
    first = kedro(project, "run", "--pipeline", "sft", "--env", "test", params=params)
    assert first.returncode == 0, first.stdout[-4000:]
    summary_1 = latest(project, "data/08_reporting/sft/summary_metrics.json")
    second = kedro(project, "run", "--pipeline", "sft", "--env", "test", params=params)
    assert second.returncode == 0, second.stdout[-4000:]
    second_adapter = versions(project, "data/06_models/sft/adapter")[-1]  # later tests train more runs
    return first, second, summary_1, latest(project, "data/08_reporting/sft/summary_metrics.json"), second_adapter


def test_sft_runs_end_to_end_and_writes_every_versioned_output(project, two_runs):
    for relative in ("data/01_raw/snapshots/sft/raw_datasets.json", "data/03_primary/sft/test_records.jsonl",
                     "data/02_intermediate/sft/aligned_records.jsonl", "data/02_intermediate/sft/align_quarantine.jsonl",
                     "data/08_reporting/sft/contamination_report.json", "data/08_reporting/sft/contamination_pairs.jsonl",
                     "data/05_model_input/sft/train_tokens", "data/08_reporting/sft/train_mask_preview.html",
                     "data/08_reporting/sft/train_length_histogram.png", "data/06_models/sft/adapter", "data/06_models/base_model",
                     "data/07_model_output/sft/tuned_responses.jsonl", "data/08_reporting/sft/loss_curve.png",
                     "data/08_reporting/sft/base_vs_tuned.csv",
                     "data/08_reporting/sft/score_histogram.png", "data/08_reporting/sft/report.md",
                     "data/08_reporting/sft/worst_and_best.csv", "data/08_reporting/sft/exact_match_by_family.csv",
                     "data/08_reporting/sft/model_card.md"):
        assert len(versions(project, relative)) == 2, relative
    adapter = project / "data/06_models/sft/adapter" / versions(project, "data/06_models/sft/adapter")[-1] / "adapter"
    assert {"adapter_model.safetensors", "prompt_template.json", "tokenizer_config.json", "training_params.json",
            "base_model.json"} <= {p.name for p in adapter.iterdir()}
    train = latest(project, "data/03_primary/sft/train_records.jsonl")
    test = latest(project, "data/03_primary/sft/test_records.jsonl")
    assert (len(train), len(test)) == (101, 14)  # the stable hash split of the first 120 demo rows
    assert latest(project, "data/08_reporting/sft/align_report.json")["total"]["rows_in"] == 120
    responses = latest(project, "data/07_model_output/sft/tuned_responses.jsonl")
    assert {"instruction", "input", "output", "model_response"} <= set(responses[0])


def test_rerun_gives_identical_metrics_and_reuses_the_base_model(project, two_runs):
    first, second, summary_1, summary_2, _ = two_runs
    for part in ("base", "tuned", "delta"):
        assert summary_1[part] == summary_2[part]
    for key in ("final_train_loss", "final_val_loss", "global_steps"):
        assert summary_1["train"][key] == summary_2["train"][key]
    assert {"base", "tuned", "delta", "train"} <= set(summary_1)
    assert "Reusing materialised base model" not in first.stdout
    assert "Reusing materialised base model" in second.stdout
    assert "Reusing tokenized split" not in first.stdout and second.stdout.count("Reusing tokenized split") == 2
    assert latest(project, "data/08_reporting/sft/train_tokenize_stats.json")["reused"] is True
    assert latest(project, "data/06_models/base_model_info.json")["reused"] is True


def test_mlflow_holds_both_runs_with_adapter_losses_and_metrics(project, two_runs):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("llm_finetune")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert run.data.params["train.lora.r"] == "16"
        assert "sft.tuned.exact_match" in run.data.metrics and "sft.base.exact_match" in run.data.metrics
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 6
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "sft.adapter")}
        assert "sft.adapter/adapter_model.safetensors" in artifacts
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"sft.loss_curve.png", "sft.score_histogram.png", "sft.train_length_histogram.png"} <= top
        assert {"sft/report.md", "sft/train_mask_preview.html", "sft/model_card.md"} <= {
            a.path for a in client.list_artifacts(run.info.run_id, "sft")}
        metrics = run.data.metrics
        assert "sft.tokenize.train.pad_fraction" in metrics and "sft.tokenize.train.trained_tokens" in metrics
        assert "tables/sft.comparison_table.csv" in {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
        assert "sft.generation.tuned.responses_per_s" in metrics
        assert metrics["sft.align.total.rows_in"] == 120
        assert metrics["sft.align.datasets.demo_instructions.rows_quarantined"] == 0
        assert metrics["sft.contamination.test_rows_contaminated"] == 0
        assert run.data.tags.get("version.torch")
        tags = run.data.tags
        assert tags["dataset_version.sft.train_records"] and tags["dataset_version.sft.adapter"]
        assert tags["dataset_version.sft.train_tokens"] == tags["dataset_version.sft.adapter"]
        # the tuned model, registered (what `make run` leaves in mlflow.db), tagged with the run's metrics
        name, number = tags["registered_model.sft"].removeprefix("models:/").split("/")
        registered = client.get_model_version(name, number)
        assert name == "llm_finetune-sft" and registered.run_id == run.info.run_id
        assert float(registered.tags["sft.tuned.exact_match"]) == metrics["sft.tuned.exact_match"]
        assert "sft.delta.exact_match" in registered.tags and "sft.align.total.rows_in" not in registered.tags
        assert registered.tags["source"] == f"sft.adapter@{tags['dataset_version.sft.adapter']}"
    assert sorted(int(v.version) for v in client.search_model_versions("name='llm_finetune-sft'")) == [1, 2]
    reply = mlflow.pyfunc.load_model("models:/llm_finetune-sft/2").predict(
        {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 3})[0]
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["role"] == "assistant"


def test_unreachable_judge_stops_the_run_before_training(project, tiny_model_dir):
    url = closed_port_url() + "/v1"
    before = versions(project, "data/06_models/sft/adapter")
    result = kedro(project, "run", "--pipeline", "sft", "--env", "test",
                   params={"model_registry.tiny-llama.path": str(tiny_model_dir), "judge.llm.api": "openai",
                           "judge.llm.url": url, "judge.llm.model": "judge"})
    assert result.returncode != 0
    assert url in result.stdout and "unreachable" in result.stdout
    assert versions(project, "data/06_models/sft/adapter") == before
    assert "Running node: sft.train" not in result.stdout


def test_llm_judge_scores_every_response_through_an_openai_compatible_server(project, tiny_model_dir, two_runs):
    judge = FakeJudge(answer=lambda prompt: "I'd rate it 85 out of 100" if len(prompt) % 2 else "no idea")
    with serve(judge.openai) as base_url:
        result = kedro(project, "run", "--pipeline", "sft", "--env", "test",
                       params={"model_registry.tiny-llama.path": str(tiny_model_dir), "judge.llm.api": "openai",
                               "judge.llm.url": base_url + "/v1", "judge.llm.model": "judge-model"})
    assert result.returncode == 0, result.stdout[-4000:]
    judged = latest(project, "data/07_model_output/sft/tuned_judgments.jsonl")
    assert len(judged) == 14 and all("llm_score" in row and "llm_raw" in row for row in judged)
    summary = latest(project, "data/08_reporting/sft/summary_metrics.json")["tuned"]
    assert summary["llm_total"] == 14 and summary["llm_scored"] + summary["llm_unparsable"] == 14
    assert {row["llm_score"] for row in judged} <= {85, None}
    assert len(judge.chat_requests) == 28  # base and tuned responses, each judged once


def test_the_books_data_runs_through_the_same_pipeline(project, tiny_model_dir):
    """A dataset registered from the command line, split the book's way (ordered: 935 / 55 / 110)."""
    book = real_data("book_instruction_data.json")
    result = kedro(project, "run", "--pipeline", "sft", "--env", "test",
                   params={"model_registry.tiny-llama.path": str(tiny_model_dir), "datasets.book.path": str(book),
                           "datasets.book.format": "alpaca", "data.datasets": "book", "data.max_rows": 0,
                           "data.split.mode": "ordered"})
    assert result.returncode == 0, result.stdout[-4000:]
    splits = [len(latest(project, f"data/03_primary/sft/{name}_records.jsonl")) for name in ("train", "val", "test")]
    assert splits == [935, 55, 110]
    assert len(latest(project, "data/07_model_output/sft/tuned_judgments.jsonl")) == 110


def test_packed_chatml_training_and_the_adapter_carries_its_template(project, tiny_model_dir):
    params = {"model_registry.tiny-llama.path": str(tiny_model_dir), "tokenize.template": "chatml",
              "tokenize.packing": "bfd", "tokenize.loss_on": "all"}
    result = kedro(project, "run", "--pipeline", "sft", "--env", "test", params=params)
    assert result.returncode == 0, result.stdout[-4000:]
    stats = latest(project, "data/08_reporting/sft/train_tokenize_stats.json")
    assert stats["packing"] == "bfd" and stats["training_rows"] < stats["rows"] and stats["packing_efficiency"] > 0.9
    adapter = project / "data/06_models/sft/adapter" / versions(project, "data/06_models/sft/adapter")[-1] / "adapter"
    saved = json.loads((adapter / "prompt_template.json").read_text())
    assert saved["template"] == "chatml" and "<|im_start|>assistant" in saved["source"]
    assert {row["template"] for row in latest(project, "data/07_model_output/sft/tuned_responses.jsonl")} == {"chatml"}
    preview = (project / "data/08_reporting/sft/train_mask_preview.html")
    page = (preview / versions(project, "data/08_reporting/sft/train_mask_preview.html")[-1] / preview.name).read_text()
    # loss_on all: every token is trained except the first of each packed sample (never a target alone either)
    samples = sum(int(n) for n in re.findall(r"(\d+) sample\(s\)", page))
    page = page.split("</p>", 1)[1]  # below the legend
    assert page.count("class='t n") == samples and page.count("class='t n cut'") == samples - 8 > 0


def test_a_generate_template_other_than_the_training_one_fails_before_training(project, tiny_model_dir):
    before = versions(project, "data/06_models/sft/adapter")
    result = kedro(project, "run", "--pipeline", "sft", "--env", "test",
                   params={"model_registry.tiny-llama.path": str(tiny_model_dir), "generate.template": "chatml"})
    assert result.returncode != 0 and "differs from tokenize.template" in result.stdout
    assert versions(project, "data/06_models/sft/adapter") == before


def test_the_model_card_describes_the_run_that_trained_the_adapter(project, two_runs):
    version, summary = two_runs[4], two_runs[3]
    card = (project / "data/08_reporting/sft/model_card.md" / version / "model_card.md").read_text()
    base = latest(project, "data/06_models/base_model_info.json")
    assert f"<!-- adapter: {version} -->" in card and f"fingerprint: `{base['fingerprint']}`" in card
    assert "| demo_instructions | `data/01_raw/demo_instructions.json` |" in card and "| 120 | 120 | 0 |" in card
    assert "Trained on 101 rows" in card and "`alpaca`" in card and "### Response:" in card
    assert "| learning_rate | `0.005` |" in card and "| max_steps | `12` |" in card
    assert f"| rouge_l | {summary['base']['rouge_l']:.4g} | {summary['tuned']['rouge_l']:.4g} |" in card
    assert card.startswith("---\nlicense: unknown\n")  # the test registry entry names no licence


def test_export_merges_the_adapter_into_a_standalone_model(project, two_runs):
    import torch
    from transformers import AutoModelForCausalLM

    from llm_finetune.models.loading import load_causal_lm

    result = kedro(project, "run", "--pipeline", "export", "--env", "test")
    assert result.returncode == 0, result.stdout[-4000:]
    merged = project / "data/06_models/merged_model" / versions(project, "data/06_models/merged_model")[-1]
    merged = merged / "merged_model"
    adapter = project / "data/06_models/sft/adapter" / versions(project, "data/06_models/sft/adapter")[-1] / "adapter"
    base = project / "data/06_models/base_model" / versions(project, "data/06_models/base_model")[-1] / "base_model"
    assert json.loads((merged / "prompt_template.json").read_text()) == json.loads(
        (adapter / "prompt_template.json").read_text())
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        standalone = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)(ids).logits
        with_adapter = load_causal_lm(base, adapter=adapter)(ids).logits
        untuned = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)(ids).logits
    torch.testing.assert_close(standalone, with_adapter, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(standalone, untuned, atol=1e-4)
    card = (merged / "README.md").read_text()
    assert f"<!-- adapter: {adapter.parent.name} -->" in card and "## Export" in card and "## Data" in card
    assert versions(project, "data/06_models/gguf_model") == []  # export.format: merged writes no GGUF


def test_gguf_export_names_a_tokenizer_llama_cpp_does_not_know_and_writes_no_gguf(project, two_runs):
    result = kedro(project, "run", "--pipeline", "export", "--env", "test", params={"export.format": "gguf"})
    assert result.returncode != 0 and "pre-tokenizer was not recognized" in result.stdout
    assert versions(project, "data/06_models/gguf_model") == []
