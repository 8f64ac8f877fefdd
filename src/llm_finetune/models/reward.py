"""The reward model: a one-output sequence classifier on the base model, LoRA + a trained score head.

* **Model.** ``AutoModelForSequenceClassification`` with ``num_labels=1`` and ``pad_token_id`` in
  its config; LoRA (peft task ``SEQ_CLS``) on ``lora.target_modules`` with the ``score`` head in
  ``modules_to_save``, so the head trains in full. Base weights load in fp32 and, in bf16, the
  frozen ones are cast down after the head is created: the head's seeded initialisation and
  the trained weights (LoRA + head, fp32) are the same in both precisions.
* **Reward index.** A sequence's reward is the score head on the decoder's hidden state at its
  last real token, ``length - 1``, with the length taken from the row. Never by searching pad
  ids: SmolLM2's pad token *is* its EOS, every answer ends with EOS, and transformers' own
  pooling ("last token that is not pad") then reads the token before the EOS, or a pad's
  position when the answer holds an EOS id. Training, validation, test and judging all call
  :func:`sequence_rewards`, so padding and EOS are handled identically everywhere.
* **Batches.** Right-padded to one width, no attention mask: in a causal model right padding
  never reaches a real token, so a reward does not depend on its batch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from llm_finetune.models.loading import device, load_tokenizer, trusts_remote_code
from llm_finetune.models.tuning import lora_config

logger = logging.getLogger(__name__)
REWARD_FILE = "reward_model.json"


def reward_lora_config(lora_params: dict):
    """peft ``LoraConfig`` for a sequence classifier: the ``score`` head trains in full."""
    return replace(lora_config(lora_params), task_type="SEQ_CLS", modules_to_save=["score"])


def _classifier(folder: Path, pad_token_id: int):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, pad_token_id=pad_token_id,
                                                               dtype=torch.float32,
                                                               trust_remote_code=trusts_remote_code(folder))
    model.config.pad_token_id = pad_token_id
    model.config.use_cache = False
    if not hasattr(model, "score"):
        raise ValueError(f"{folder}: {type(model).__name__} has no `score` head; reward models need a decoder "
                         "architecture whose sequence classifier is `score` (Llama, Mistral, Qwen, Gemma, ...)")
    return model


def _frozen_to(model, precision: str):
    """Base weights in bf16 under ``precision: bf16``; LoRA and trained-head weights stay fp32 (as trained)."""
    if precision == "bf16":
        for name, parameter in model.named_parameters():
            if "lora_" not in name and "modules_to_save" not in name:
                parameter.data = parameter.data.to(torch.bfloat16)
    return model.to(device())


def prepare_reward_model(base_model: Path, lora_params: dict, precision: str, pad_token_id: int, seed: int):
    """The untrained reward model (seeded head, zero LoRA update); returns ``(model, trainable, total)``."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(_classifier(base_model, pad_token_id), reward_lora_config(lora_params))
    model = _frozen_to(model, precision)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("Reward model: %d trainable of %d parameters (%.2f%%), precision %s", trainable, total,
                100 * trainable / total, precision)
    return model, trainable, total


def load_reward_model(folder: Path, precision: str = "fp32", base_model: Path | None = None):
    """A saved reward model: our LoRA folder (base from ``base_model`` or ``reward_model.json``) or a full one.

    A folder without ``adapter_config.json`` is loaded as a whole sequence classifier (any
    one-output reward model saved by transformers). Returns ``(model, tokenizer)``, in eval mode.
    """
    from peft import PeftModel

    folder = Path(folder)
    tokenizer = load_tokenizer(folder)
    if not (folder / "adapter_config.json").is_file():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} holds neither a LoRA reward model (adapter_config.json) nor a model "
                                    "(config.json)")
        _check_sequence_classifier(folder)
        return _frozen_to(_classifier(folder, tokenizer.pad_token_id), precision).eval(), tokenizer
    if base_model is None:
        record = folder / REWARD_FILE
        if not record.is_file():
            raise FileNotFoundError(f"{folder} lacks {REWARD_FILE}; pass the base model folder it was trained on")
        base_model = Path(json.loads(record.read_text())["base_model"])
    if not (Path(base_model) / "config.json").is_file():
        raise FileNotFoundError(f"Base model {base_model} of reward model {folder} holds no config.json")
    model = PeftModel.from_pretrained(_classifier(Path(base_model), tokenizer.pad_token_id), folder)
    return _frozen_to(model, precision).eval(), tokenizer


def _check_sequence_classifier(folder: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trusts_remote_code(folder))
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures) or config.num_labels != 1:
        raise ValueError(f"{folder} holds {architectures or 'a model'} with {config.num_labels} labels, not a reward "
                         "model (a sequence classifier with one output)")


def pad_sequences(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and the true ``lengths`` (the reward index is ``length - 1``)."""
    if any(not ids for ids in sequences):
        raise ValueError("cannot score an empty sequence")
    width = max(len(ids) for ids in sequences)
    input_ids = torch.tensor([list(ids) + [pad_token_id] * (width - len(ids)) for ids in sequences])
    return input_ids, torch.tensor([len(ids) for ids in sequences])


def sequence_rewards(model, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """fp32 reward of each row: the score head at position ``length - 1`` (see the module docstring)."""
    classifier = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(classifier, classifier.base_model_prefix)
    input_ids, lengths = input_ids.to(classifier.device), lengths.to(classifier.device)
    hidden = backbone(input_ids=input_ids, use_cache=False).last_hidden_state
    last = hidden[torch.arange(len(lengths), device=hidden.device), lengths - 1]
    return classifier.score(last).squeeze(-1).float()
