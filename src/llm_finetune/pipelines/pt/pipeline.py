"""Wiring of the ``pt`` stage (its data, preflight and base model come from ``pipelines/stages``)."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.pt.nodes import pack_blocks, perplexity_after, perplexity_before, pt_metrics, train_pt_adapter


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(pack_blocks, ["pt.train_records", "pt.val_records", "pt.test_records", "base_model", "params:pt",
                           "token_cache"], ["pt.train_blocks", "pt.val_blocks", "pt.test_blocks", "pt.block_stats"],
             name="pack_blocks", namespace="pt"),
        node(perplexity_before, ["pt.test_blocks", "base_model", "params:pt"], "pt.perplexity_before",
             name="perplexity_before", namespace="pt"),
        node(train_pt_adapter, ["pt.train_blocks", "pt.val_blocks", "base_model", "base_model_info", "params:pt",
                                "train_checkpoints"], ["pt.adapter", "pt.loss_history", "pt.train_info"],
             name="train", namespace="pt"),
        node(perplexity_after, ["pt.test_blocks", "base_model", "pt.adapter", "params:pt"], "pt.perplexity_after",
             name="perplexity_after", namespace="pt"),
        node(pt_metrics, ["pt.perplexity_before", "pt.perplexity_after", "pt.block_stats", "pt.train_info",
                          "pt.loss_history"], ["pt.metrics", "pt.loss_curve"], name="report", namespace="pt"),
    ])
