"""Wiring of the ``export`` pipeline: the latest (or ``--load-versions``) base model and sft adapter,
merged; as GGUF too with ``--params export.format=gguf``."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.export.nodes import export_gguf, merge_adapter


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(func=merge_adapter, inputs=["base_model", "sft.adapter", "sft.model_card", "params:export"],
             outputs="merged_model", name="merge_adapter"),
        node(func=export_gguf, inputs=["merged_model", "params:export"], outputs="gguf_model", name="export_gguf"),
    ])
