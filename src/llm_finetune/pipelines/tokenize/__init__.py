"""The ``tokenize`` pipeline: tokenize and pack the train / val splits once, and show the masks."""

from llm_finetune.pipelines.tokenize.pipeline import create_pipeline

__all__ = ["create_pipeline"]
