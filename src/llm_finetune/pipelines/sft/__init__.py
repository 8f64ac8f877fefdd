"""The ``sft`` pipeline: data -> base model -> tokenize -> train -> generate -> judge -> report."""

from llm_finetune.pipelines.sft.pipeline import create_pipeline

__all__ = ["create_pipeline"]
