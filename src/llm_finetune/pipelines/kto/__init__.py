"""The ``kto`` stage (its shared front is in ``pipelines/stages``)."""

from llm_finetune.pipelines.kto.pipeline import create_pipeline

__all__ = ["create_pipeline"]
