"""The evaluation pipelines: base vs tuned generation + judging (part of ``sft``), and ``eval``."""

from llm_finetune.pipelines.evaluation.pipeline import create_file_pipeline, create_pipeline

__all__ = ["create_file_pipeline", "create_pipeline"]
