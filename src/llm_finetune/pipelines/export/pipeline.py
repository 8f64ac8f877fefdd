"""Wiring of the ``export`` pipeline: the latest (or ``--load-versions``) base model and sft adapter."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.export.nodes import merge_adapter


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(merge_adapter, ["base_model", "sft.adapter", "params:export"], "merged_model", name="merge_adapter"),
    ])
