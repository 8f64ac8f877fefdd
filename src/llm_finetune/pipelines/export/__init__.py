"""The ``export`` pipeline: merge a trained adapter into its base model."""

from llm_finetune.pipelines.export.pipeline import create_pipeline

__all__ = ["create_pipeline"]
