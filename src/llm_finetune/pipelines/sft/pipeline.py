"""Wiring of the ``sft`` stage nodes (``data``, ``tokenize`` and ``evaluation`` join them in the registry)."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.models.materialize import prepare_base_model
from llm_finetune.pipelines.sft.nodes import preflight_checks, train_adapter


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(preflight_checks, ["dataset_plan", "params:model", "params:model_registry", "params:tokenize",
                                "params:train", "params:generate", "params:judge", "judge_credentials"],
             "preflight_report", name="preflight"),
        node(prepare_base_model, ["params:model", "params:model_registry", "base_model_cache", "preflight_report"],
             ["base_model", "base_model_info"], name="prepare_base_model"),
        node(train_adapter, ["train_tokens", "val_tokens", "base_model", "base_model_info", "params:tokenize",
                             "params:train", "train_checkpoints"], ["adapter", "loss_history", "train_info"],
             name="train"),
    ], namespace="sft", inputs={"judge_credentials", "base_model_cache", "train_checkpoints"},
        outputs={"base_model", "base_model_info"},
        parameters={"params:model", "params:model_registry", "params:tokenize", "params:train", "params:generate",
                    "params:judge"})
