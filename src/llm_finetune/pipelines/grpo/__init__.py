"""The ``grpo`` stage: online RL whose rewards are our judges."""

from llm_finetune.pipelines.grpo.pipeline import create_pipeline

__all__ = ["create_pipeline"]
