"""Wiring of the ``pt`` stage (its data, preflight and base model come from ``pipelines/stages``)."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.pt.nodes import (
    pack_blocks,
    perplexity_after,
    perplexity_before,
    pt_metrics,
    train_pt_adapter,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(pack_blocks, ["train_records", "val_records", "test_records", "base_model", "params:pt", "token_cache"],
             ["train_blocks", "val_blocks", "test_blocks", "block_stats"], name="pack_blocks"),
        node(perplexity_before, ["test_blocks", "base_model", "params:pt"], "perplexity_before",
             name="perplexity_before"),
        node(train_pt_adapter, ["train_blocks", "val_blocks", "base_model", "base_model_info", "params:pt",
                                "train_checkpoints"], ["adapter", "loss_history", "train_info"], name="train"),
        node(perplexity_after, ["test_blocks", "base_model", "adapter", "params:pt"], "perplexity_after",
             name="perplexity_after"),
        node(pt_metrics, ["perplexity_before", "perplexity_after", "block_stats", "train_info", "loss_history"],
             ["metrics", "loss_curve"], name="report"),
    ], namespace="pt", inputs={"base_model", "base_model_info", "token_cache", "train_checkpoints"},
        parameters={"params:pt"})
