"""The ``rm`` stage (its shared front is in ``pipelines/stages``)."""

from llm_finetune.pipelines.rm.pipeline import create_pipeline

__all__ = ["create_pipeline"]
