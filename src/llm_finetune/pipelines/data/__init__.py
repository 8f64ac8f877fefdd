"""The ``data`` pipeline: download -> align -> split."""

from llm_finetune.pipelines.data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
