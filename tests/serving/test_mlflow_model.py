"""The tuned model in MLflow's model registry: logged as an ``llm/v1/chat`` transformers model, registered with
the run's metrics as version tags, loaded back through ``models:/<name>/<version>`` and served by
``mlflow models serve`` on 127.0.0.1.

Real MLflow throughout: a sqlite tracking and registry store and an artifact folder in a temporary directory,
the real ``transformers`` flavour and scoring server. The model is a LoRA on the tiny random Llama whose
``lora_B`` is random (peft starts it at zero, which would make merging a no-op), trained with alpaca.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch

from llm_finetune.serving.mlflow_model import ServingSettings, chat_parts, log_chat_model, metric_tags, register

NAME = "llm_finetune-sft"
PARAMS = {"mlflow_model": {"dtype": "float32", "max_new_tokens": 8, "example": "Name a colour.",
                           "version_tags": {"exclude": ["align", "tokenize"]},
                           "stages": {"sft": {"log": True, "registered_name": NAME},
                                      "pt": {"log": False, "registered_name": "llm_finetune-pt"}}}}
RUN_METRICS = {"sft.base.exact_match": 0.25, "sft.tuned.exact_match": 0.5, "sft.delta.exact_match": 0.25,
               "sft.train.final_val_loss": 1.5, "sft.align.total.rows_in": 120.0, "sft.tokenize.train.rows": 101.0,
               "train_loss": 2.0}
REQUEST = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4}


def _adapter(base: Path, folder: Path, template: str = "alpaca") -> Path:
    """A LoRA adapter folder as the sft stage saves one: weights, tokenizer, template, base record."""
    from peft import LoraConfig, get_peft_model

    from llm_finetune.models.loading import load_causal_lm, load_tokenizer
    from llm_finetune.tokens.settings import TEMPLATE_FILE, saved_template

    tokenizer = load_tokenizer(base)
    model = get_peft_model(load_causal_lm(base), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tokenize = {"template": template, "cutoff_len": 64, "loss_on": "assistant", "truncation": "truncate_response",
                "packing": "none"}
    (folder / TEMPLATE_FILE).write_text(json.dumps(saved_template(tokenize, tokenizer)))
    (folder / "base_model.json").write_text(json.dumps({"name": "tiny-llama", "fingerprint": "f00d"}))
    return folder


@pytest.fixture(scope="module")
def registry(tiny_model_dir, tmp_path_factory):
    """A sqlite MLflow store holding one run with the sft metrics and version 1 of ``llm_finetune-sft``."""
    root = tmp_path_factory.mktemp("mlflow")
    adapter = _adapter(tiny_model_dir, root / "adapter")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("serving", artifact_location=str(root / "artifacts"))
        settings = ServingSettings.for_stage(PARAMS, "sft")
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_metrics(RUN_METRICS)
            info = log_chat_model(adapter, settings, "sft.adapter@2026-01-01T00.00.00.000Z")
        version = register(info.model_uri, settings, run.info.run_id, extra_tags={"source": "sft.adapter@test"})
        yield {"uri": uri, "root": root, "adapter": adapter, "info": info, "version": version, "run": run}
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture
def tracking(registry):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(registry["uri"])
    yield registry
    mlflow.set_tracking_uri(previous)


def _prompt_ids(adapter: Path, template: str = "alpaca") -> list[int]:
    """The ids generation in the pipeline gives REQUEST's message: the training template's prompt."""
    from llm_finetune.models.loading import load_tokenizer
    from llm_finetune.tokens.conversations import encode_prompts
    from llm_finetune.tokens.templates import load_template

    record = {"messages": [REQUEST["messages"][0], {"role": "assistant", "content": ""}], "meta": {}}
    return encode_prompts([record], load_template(template), load_tokenizer(adapter))[0]


def test_a_stage_is_logged_only_when_configured_and_bad_values_fail_early():
    assert ServingSettings.for_stage(PARAMS, "pt") is None and ServingSettings.for_stage(PARAMS, "kto") is None
    assert ServingSettings.for_stage({}, "sft") is None
    unregistered = ServingSettings.for_stage({"mlflow_model": {"stages": {"sft": {"registered_name": None}}}}, "sft")
    assert unregistered is not None and unregistered.registered_name is None
    with pytest.raises(ValueError, match="mlflow_model.dtype"):
        ServingSettings.for_stage({"mlflow_model": {"dtype": "int8", "stages": {"sft": {"log": True}}}}, "sft")
    with pytest.raises(ValueError, match="registered_name"):
        ServingSettings.for_stage({"mlflow_model": {"stages": {"sft": {"registered_name": "a/b"}}}}, "sft")
    tags = metric_tags(RUN_METRICS, ServingSettings.for_stage(PARAMS, "sft"))
    assert set(tags) == {"sft.base.exact_match", "sft.tuned.exact_match", "sft.delta.exact_match",
                         "sft.train.final_val_loss"}


def test_the_registered_version_carries_the_metrics_the_template_and_the_merged_weights(tracking):
    from llm_finetune.models.loading import load_causal_lm
    from llm_finetune.tokens.templates import load_template, render_prompt

    version = tracking["version"]
    assert (version.name, str(version.version)) == (NAME, "1")
    stored = mlflow.MlflowClient().get_model_version(NAME, "1")
    assert stored.run_id == tracking["run"].info.run_id
    assert {k: float(v) for k, v in stored.tags.items() if k.startswith("sft.")} == {
        k: v for k, v in RUN_METRICS.items() if k.startswith(("sft.base.", "sft.tuned.", "sft.delta.", "sft.train."))}
    assert stored.tags["source"] == "sft.adapter@test"

    pipeline = mlflow.transformers.load_model(f"models:/{NAME}/1")
    record = {"messages": [REQUEST["messages"][0], {"role": "assistant", "content": ""}], "meta": {}}
    rendered = pipeline.tokenizer.apply_chat_template(REQUEST["messages"], tokenize=False, add_generation_prompt=True)
    assert rendered == render_prompt(record, load_template("alpaca"), pipeline.tokenizer)
    assert rendered.endswith("### Response:\n") and "<|im_start|>" not in rendered  # alpaca, not the base's ChatML
    ids = torch.tensor([_prompt_ids(tracking["adapter"])])
    expected = load_causal_lm(Path(json.loads((tracking["adapter"] / "adapter_config.json").read_text())[
        "base_model_name_or_path"]), adapter=tracking["adapter"])
    with torch.no_grad():
        assert torch.allclose(pipeline.model(ids).logits, expected(ids).logits, atol=1e-5)
    assert not (Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/1")) / "peft").exists()

    model = mlflow.models.get_model_info(f"models:/{NAME}/1")
    assert model.metadata["task"] == "llm/v1/chat"
    assert {"template": "alpaca", "weights": "merged", "base_model": "tiny-llama"}.items() <= \
        model.metadata["llm_finetune"].items()
    assert model.flavors["transformers"]["source_model_name"] == "sft.adapter@2026-01-01T00.00.00.000Z"


def test_the_registered_version_answers_a_chat_request_in_the_training_template(tracking):
    reply = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(REQUEST)[0]
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    assert reply["usage"]["prompt_tokens"] == len(_prompt_ids(tracking["adapter"]))
    assert 1 <= reply["usage"]["completion_tokens"] <= REQUEST["max_tokens"]


@pytest.mark.parametrize("template", ["alpaca", "mistral"])
def test_a_bos_tokenizer_gives_the_served_prompt_one_bos_as_training_does(tracking, bos_model_dir, tmp_path, template):
    """mistral renders ``<s>`` itself, alpaca leaves it to the tokenizer: either way one BOS, as in training."""
    adapter = _adapter(bos_model_dir, tmp_path / "adapter", template)
    with mlflow.start_run(experiment_id=tracking["run"].info.experiment_id):
        info = log_chat_model(adapter, ServingSettings.for_stage(PARAMS, "sft"), f"{template}@test")
    config = mlflow.pyfunc.load_model(info.model_uri).model_config
    pipeline = mlflow.transformers.load_model(info.model_uri)
    rendered = pipeline.tokenizer.apply_chat_template(REQUEST["messages"], tokenize=False, add_generation_prompt=True)
    served = pipeline.tokenizer(rendered, add_special_tokens=config["add_special_tokens"])["input_ids"]
    assert served == _prompt_ids(adapter, template) and served.count(pipeline.tokenizer.bos_token_id) == 1
    assert config["add_special_tokens"] is (template == "alpaca")


def test_end_ids_are_the_templates(tiny_model_dir, tmp_path):
    """A ChatML adapter ends its replies at ``<|im_end|>`` in the served model too."""
    from llm_finetune.tokens.settings import TEMPLATE_FILE, saved_template

    adapter = _adapter(tiny_model_dir, tmp_path / "adapter")
    model, tokenizer, template = chat_parts(adapter)
    tokenize = {"template": "chatml", "cutoff_len": 64, "loss_on": "assistant", "truncation": "truncate_response",
                "packing": "none"}
    (adapter / TEMPLATE_FILE).write_text(json.dumps(saved_template(tokenize, tokenizer)))
    model, tokenizer, template = chat_parts(adapter)
    assert template.name == "chatml" and tokenizer.convert_tokens_to_ids("<|im_end|>") in \
        model.generation_config.eos_token_id


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except OSError:
        return 0


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_chat_request(registry):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    venv_bin = Path(sys.executable).parent  # the scoring server runs `uvicorn` from PATH: the venv's
    env = os.environ | {"MLFLOW_TRACKING_URI": registry["uri"], "MLFLOW_REGISTRY_URI": registry["uri"],
                        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(venv_bin / "mlflow"), "models", "serve", "-m", f"models:/{NAME}/1",
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = (registry["root"] / "serve.log").open("w")
    server = subprocess.Popen(command, cwd=registry["root"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # its own process group: the workers stop with it
    try:
        deadline = time.monotonic() + 180
        while _get(f"{base}/ping") != 200:
            assert server.poll() is None, (registry["root"] / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /ping in 180 s"
            time.sleep(0.5)
        request = urllib.request.Request(f"{base}/invocations", data=json.dumps(REQUEST).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    assert isinstance(answer, list) and len(answer) == 1, answer  # a chat request in, unwrapped completions out
    reply = answer[0]
    assert reply["object"] == "chat.completion", answer
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["usage"]["prompt_tokens"] == len(_prompt_ids(registry["adapter"]))


def test_a_whole_model_folder_is_logged_as_it_is(tiny_model_dir, tmp_path):
    """A full / freeze fine-tune or an export's merged folder: no adapter_config.json, no base to merge into."""
    import shutil

    from llm_finetune.tokens.settings import TEMPLATE_FILE, saved_template

    folder = tmp_path / "merged"
    shutil.copytree(tiny_model_dir, folder)
    _, tokenizer, _ = chat_parts(tiny_model_dir)
    tokenize = {"template": "alpaca", "cutoff_len": 64, "loss_on": "assistant", "truncation": "truncate_response",
                "packing": "none"}
    (folder / TEMPLATE_FILE).write_text(json.dumps(saved_template(tokenize, tokenizer)))
    model, tokenizer, template = chat_parts(folder, "bfloat16")
    assert template.name == "alpaca" and model.dtype == torch.bfloat16
    assert tokenizer.apply_chat_template(REQUEST["messages"], tokenize=False, add_generation_prompt=True).endswith(
        "### Response:\n")
