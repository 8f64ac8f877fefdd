"""The ``eval`` pipeline: judge an existing responses file (the book's layout) without training."""

from llm_finetune.pipelines.eval.pipeline import create_pipeline

__all__ = ["create_pipeline"]
