"""LLaMA-Factory training YAMLs become experiment files that name only parameters this project has, with
LLaMA-Factory's values (its defaults where the file is silent), and keys we cannot honour are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llm_finetune.data.registry import resolve_datasets
from llm_finetune.experiments.llamafactory import TranslationError, translate
from llm_finetune.runtime_params import unknown_keys
from llm_finetune.tokens.templates import load_template, render_text
from llm_finetune.training.settings import train_settings
from tests.conftest import REPO, real_data

EXAMPLES = Path(__file__).parent / "lf_examples"
STAGE_BLOCKS = {"sft": ("train", "data"), "dpo": ("dpo", "dpo_data"), "rm": ("rm", "rm_data"),
                "pt": ("pt", "pt_data"), "kto": ("kto", "kto_data")}


@pytest.fixture
def lf_folder(tmp_path, monkeypatch):
    """A folder like a LLaMA-Factory checkout: data/dataset_info.json (our own entries) and the cwd there."""
    (tmp_path / "data").mkdir()
    info = {"identity": {"file_name": "identity.json"}, "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
            "dpo_en_demo": {"file_name": "dpo_en_demo.json", "ranking": True, "formatting": "sharegpt",
                            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
            "kto_en_demo": {"file_name": "kto_en_demo.json", "formatting": "sharegpt",
                            "columns": {"messages": "messages", "kto_tag": "label"},
                            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                     "assistant_tag": "assistant"}},
            "c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}}}
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps(info))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def configured_parameters() -> dict:
    from kedro.config import OmegaConfigLoader

    from llm_finetune.settings import CONFIG_LOADER_ARGS

    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "base_env"}
    return OmegaConfigLoader(conf_source=str(REPO / "conf"), env="base", base_env="base", **args)["parameters"]


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def get(params: dict, dotted: str):
    for part in dotted.split("."):
        params = params[part]
    return params


@pytest.mark.parametrize("name, pipeline", [("lora_sft", "sft"), ("full_sft", "sft"), ("lora_dpo", "dpo"),
                                            ("lora_reward", "rm"), ("lora_pretrain", "pt"), ("lora_kto", "kto")])
def test_each_example_becomes_an_experiment_of_known_parameters_and_valid_settings(lf_folder, name, pipeline):
    translation = translate(example(name), f"{name}.yaml")
    experiment = yaml.safe_load(translation.experiment_yaml())
    assert experiment["run"]["pipeline"] == pipeline
    params = experiment["run"]["params"]
    assert unknown_keys(params, configured_parameters()) == []
    train_block, data_block = STAGE_BLOCKS[pipeline]
    train = params[train_block] if pipeline == "sft" else params[train_block]["train"]
    settings = train_settings(train, f"{train_block}.train")  # our own validation accepts every value
    assert (settings.learning_rate, settings.epochs, settings.batch_size) == (
        float(example(name)["learning_rate"]), 3.0, 1)
    assert (settings.gradient_accumulation_steps, settings.lr_scheduler, settings.warmup_steps) == (8, "cosine", 0.1)
    assert settings.precision == "bf16" and settings.gradient_checkpointing  # LLaMA-Factory checkpoints by default
    assert settings.max_train_rows is None and settings.max_steps is None  # our stages' caps are lifted
    assert (settings.seed, settings.logging_steps, settings.save_steps) == (42, 10, 500)
    assert settings.group_by_length is False
    assert params[data_block]["dataset_info"] == str((lf_folder / "data" / "dataset_info.json").resolve())
    assert params[data_block]["max_rows"] == 1000
    assert params["model"] == "lf-meta-llama-meta-llama-3-8b-instruct"
    assert params["model_registry"][params["model"]] == {
        "source": "hub", "repo_id": "meta-llama/Meta-Llama-3-8B-Instruct", "trust_remote_code": True}
    if name.startswith("lora"):
        assert (settings.method, settings.lora.r, settings.lora.alpha) == ("lora", 8, 16)  # alpha: 2 x rank
        assert settings.lora.target_modules == "all-linear"
    else:
        assert settings.method == "full"
    no_effect = dict(translation.no_effect)
    assert {"output_dir", "report_to", "ddp_timeout", "overwrite_cache"} <= set(no_effect)


def test_stage_specific_keys(lf_folder):
    dpo = translate(example("lora_dpo")).params["dpo"]
    assert (dpo["loss_type"], dpo["beta"], dpo["label_smoothing"], dpo["gamma"]) == ("sigmoid", 0.1, 0.0, 0.5)
    simpo = translate(example("lora_dpo") | {"pref_loss": "simpo", "simpo_gamma": 1.0, "pref_beta": 2.0}).params["dpo"]
    assert (simpo["loss_type"], simpo["beta"], simpo["gamma"]) == ("simpo", 2.0, 1.0)
    kto = translate(example("lora_kto") | {"kto_chosen_weight": 1.2}).params["kto"]
    assert (kto["beta"], kto["desirable_weight"], kto["undesirable_weight"]) == (0.1, 1.2, 1.0)
    pt = translate(example("lora_pretrain") | {"cutoff_len": 512}).params["pt"]
    assert (pt["block_size"], pt["remainder"], pt["cross_document_attention"]) == (512, "drop", True)
    rm = translate(example("lora_reward"))
    assert rm.pipeline == "rm" and "template" not in dict(rm.no_effect)
    assert rm.params["tokenize"]["template"] == "llama3"


def test_the_files_silence_means_llamafactorys_defaults_not_ours(lf_folder):
    """A YAML without learning_rate trains at transformers' 5e-5 in LLaMA-Factory, not at our 1e-3."""
    data = {k: v for k, v in example("lora_sft").items()
            if k not in ("learning_rate", "lora_rank", "num_train_epochs", "warmup_ratio", "template", "cutoff_len")}
    translation = translate(data)
    train = translation.params["train"]
    assert (train["learning_rate"], train["lora"]["r"], train["lora"]["alpha"]) == (5e-5, 8, 16)
    assert (train["epochs"], train["warmup_steps"], train["lr_scheduler"]) == (3.0, 0, "cosine")
    assert translation.params["tokenize"] == {"cutoff_len": 2048, "packing": "none", "loss_on": "assistant",
                                              "template": "tokenizer"}
    defaults = {lf for lf, _, _ in translation.defaults}
    assert {"learning_rate", "lora_rank", "lora_alpha", "num_train_epochs", "cutoff_len"} <= defaults
    assert "learning_rate -> train.learning_rate = 5e-05" in translation.render()


def test_loss_masks_packing_validation_and_a_local_model(lf_folder, tiny_model_dir):
    data = example("lora_sft") | {"model_name_or_path": str(tiny_model_dir), "train_on_prompt": True,
                                  "neat_packing": True, "cutoff_len": 1024, "val_size": 0.1, "lora_alpha": 32,
                                  "lora_target": "q_proj,v_proj", "bf16": False, "flash_attn": "sdpa"}
    params = translate(data, model_registry={"tiny": {"source": "local", "path": str(tiny_model_dir)}}).params
    assert params["model"] == "tiny"  # the registered entry is reused, with the file's trust_remote_code
    assert params["model_registry"] == {"tiny": {"trust_remote_code": True}}
    assert params["tokenize"]["loss_on"] == "all" and params["tokenize"]["packing"] == "greedy"
    assert params["tokenize"]["cutoff_len"] == 1023  # as LLaMA-Factory: packing takes one token off cutoff_len
    assert params["data"]["split"] == {"train_fraction": 0.8, "test_fraction": 0.1}
    train = params["train"]
    assert (train["lora"]["alpha"], train["lora"]["target_modules"]) == (32.0, ["q_proj", "v_proj"])
    assert (train["precision"], train["attention"]) == ("fp32", "sdpa")
    mask_history = translate(example("lora_sft") | {"mask_history": True}).params["tokenize"]["loss_on"]
    assert mask_history == "last_assistant"


def test_qlora_and_fp16_map_onto_the_method_and_the_precision(lf_folder):
    params = translate(example("lora_sft") | {"quantization_bit": 4, "fp16": True, "bf16": False}).params
    assert params["train"]["method"] == "qlora" and params["train"]["precision"] == "fp16"
    assert params["train"]["lora"]["r"] == example("lora_sft").get("lora_rank", 8)
    with pytest.raises(TranslationError, match="QLoRA here is 4-bit NF4 under LoRA, in sft and pt"):
        translate(example("lora_dpo") | {"quantization_bit": 4})


def test_keys_that_cannot_be_honoured_are_refused_together_with_the_nearest_known_key(lf_folder):
    data = example("full_sft") | {"deepspeed": "examples/deepspeed/ds_z3_config.json", "quantization_bit": 8,
                                  "image_max_pixels": 262144, "fp16": True, "learnig_rate": 1e-4,
                                  "packing": True, "pref_loss": "kto_pair", "stage": "dpo", "freeze_vision_tower": True}
    with pytest.raises(TranslationError) as error:
        translate(data, "full_dpo.yaml")
    message = str(error.value)
    assert message.startswith("full_dpo.yaml: 6 key(s) cannot be honoured, so nothing was run")
    for expected in ("deepspeed: 'examples/deepspeed/ds_z3_config.json': DeepSpeed is not translated",
                     "quantization_bit: 8: QLoRA here is 4-bit NF4", "image_max_pixels: 262144: multimodal",
                     "learnig_rate: not a LLaMA-Factory training argument this translation knows; did you mean "
                     "learning_rate?", "packing: true without neat_packing lets packed samples attend to each other",
                     "pref_loss: 'kto_pair' is not supported"):
        assert expected in message, expected
    assert "freeze_vision_tower" not in message  # at its default: nothing to refuse
    for stage, why in (("ppo", "grpo"), ("dpo_typo", "not supported")):
        with pytest.raises(TranslationError, match=why):
            translate(example("lora_sft") | {"stage": stage})
    with pytest.raises(TranslationError, match="do_train: not true"):
        translate({k: v for k, v in example("lora_sft").items() if k != "do_train"})
    with pytest.raises(TranslationError, match="dataset_info.json does not exist"):
        translate(example("lora_sft") | {"dataset_dir": "elsewhere"})


def test_llama3_renders_llamafactorys_text_exactly_and_other_templates_fall_back_to_the_tokenizers(lf_folder):
    """LLaMA-Factory's llama3 (data/template.py): BOS once, then system, user and assistant headers, <|eot_id|>
    after every turn, nothing between turns (the string below is its rendering, written out by hand)."""
    record = {"system": "S", "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
                                          {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}
    header = "<|start_header_id|>{}<|end_header_id|>\n\n"
    llamafactory = ("<|begin_of_text|>" + header.format("system") + "S<|eot_id|>"
                    + header.format("user") + "Q<|eot_id|>"
                    + header.format("assistant") + "A<|eot_id|>" + header.format("user") + "Q2<|eot_id|>"
                    + header.format("assistant") + "A2<|eot_id|>")
    assert render_text(record, load_template("llama3")) == llamafactory
    for name in ("alpaca", "chatml", "qwen", "mistral", "vicuna", "zephyr", "qwen3_nothink"):
        translation = translate(example("lora_sft") | {"template": name})
        assert translation.params["tokenize"]["template"] == "tokenizer"
        assert any(note.startswith(f"template {name}: no template here renders") for note in translation.notes)


def test_the_real_dataset_info_resolves_through_our_registry():
    """LLaMA-Factory's own dataset_info.json and demo files (../shared/data/real), read where they lie."""
    folder = real_data("dataset_info.json").parent
    data = example("lora_sft") | {"dataset": "alpaca_en_demo,glaive_toolcall_en_demo", "dataset_dir": str(folder)}
    params = translate(data).params["data"]
    specs = resolve_datasets(params["datasets"], {}, params["dataset_info"], params["max_rows"])
    assert [(s["name"], s["format"], s["max_rows"]) for s in specs] == [
        ("alpaca_en_demo", "alpaca", 1000), ("glaive_toolcall_en_demo", "sharegpt", 1000)]
