"""The ``dpo`` stage (its shared front is in ``pipelines/stages``)."""

from llm_finetune.pipelines.dpo.pipeline import create_pipeline

__all__ = ["create_pipeline"]
