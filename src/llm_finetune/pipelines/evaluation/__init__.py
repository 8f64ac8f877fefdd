"""The ``evaluation`` pipeline: generate responses for base and tuned models, judge, report."""

from llm_finetune.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
