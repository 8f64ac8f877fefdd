"""One LoRA for base + SFT + DPO: two LoRA adapters stacked exactly into one (``dpo_sft`` saves it).

``[A1; A2]`` and ``[s1·B1, s2·B2]`` give ``B @ A = s1·B1A1 + s2·B2A2``, so the stacked adapter
loads wherever an SFT adapter does (generation, evaluation, export) and reproduces base + SFT +
DPO to float precision. Only plain LoRA can be stacked this way (no DoRA, patterns or extra
modules); anything else is refused with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch


@dataclass
class LoraFolder:
    """A LoRA adapter as tensors and a peft ``LoraConfig``, saved like ``PeftModel.save_pretrained``."""

    state: dict
    config: object

    def save_pretrained(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state.items()}, str(Path(folder) / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        self.config.save_pretrained(str(folder))


def lora_scale(config: dict) -> float:
    """The factor peft multiplies ``B @ A`` by; raises for what cannot be stacked exactly."""
    blocked = [k for k in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save") if config.get(k)]
    if config.get("peft_type", "LORA") != "LORA" or config.get("bias", "none") != "none" or blocked:
        raise ValueError(f"cannot stack this adapter exactly (peft_type {config.get('peft_type')}, bias "
                         f"{config.get('bias')}, {', '.join(blocked) or 'no extras'}): use a plain LoRA SFT adapter")
    return config["lora_alpha"] / (config["r"] ** 0.5 if config.get("use_rslora") else config["r"])


def stack_lora(first: tuple[dict, dict], second: tuple[dict, dict]) -> tuple[dict, int]:
    """``(state, rank)`` of one LoRA whose update (scale 1) is the sum of two ``(state, config)`` LoRAs.

    ``[A1; A2]`` and ``[s1·B1, s2·B2]`` give ``B @ A = s1·B1A1 + s2·B2A2`` exactly; a module only one
    adapter trains gets zero blocks for the other.
    """
    (state_1, config_1), (state_2, config_2) = first, second
    ranks, scales = (config_1["r"], config_2["r"]), (lora_scale(config_1), lora_scale(config_2))
    modules = set()
    for key in [*state_1, *state_2]:
        if not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise ValueError(f"cannot stack adapter weight {key!r}: only LoRA A / B matrices")
        modules.add(key.rsplit(".", 2)[0])
    stacked = {}
    for module in sorted(modules):
        a_key, b_key = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
        some = state_1 if a_key in state_1 else state_2
        width, height = some[a_key].shape[1], some[b_key].shape[0]
        a_parts, b_parts = [], []
        for state, rank, scale in zip((state_1, state_2), ranks, scales):
            a_parts.append(state[a_key].float() if a_key in state else torch.zeros(rank, width))
            b_parts.append(state[b_key].float() * scale if b_key in state else torch.zeros(height, rank))
        stacked[a_key], stacked[b_key] = torch.cat(a_parts, 0), torch.cat(b_parts, 1)
    return stacked, sum(ranks)


def stacked_adapter(start_adapter: Path, model) -> LoraFolder:
    """The SFT adapter in ``start_adapter`` and the trained LoRA of ``model`` as one LoRA on the base."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    sft = (load_file(str(Path(start_adapter) / "adapter_model.safetensors")),
           json.loads((Path(start_adapter) / "adapter_config.json").read_text()))
    config = model.peft_config["default"]
    dpo = ({k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()}, config.to_dict())
    state, rank = stack_lora(sft, dpo)
    prefix = "base_model.model."
    targets = sorted({key.rsplit(".", 2)[0].removeprefix(prefix) for key in state})
    return LoraFolder(state, replace(config, r=rank, lora_alpha=rank, use_rslora=False, target_modules=targets))
