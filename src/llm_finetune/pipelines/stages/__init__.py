"""Shared front of the rm / dpo / pt stages: namespaced data, preflight, base model, pair tokenization."""

from llm_finetune.pipelines.stages.pipeline import create_pipeline

__all__ = ["create_pipeline"]
