"""Wiring of the ``tokenize`` pipeline (part of ``sft``), in the ``sft`` namespace."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.tokenize.nodes import preview_masks, tokenize_split, tokenize_train_split

SPLITS = {"train": tokenize_train_split, "val": tokenize_split}  # only training rows are capped (train.max_train_rows)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        *[node(function, [f"{split}_records", "base_model", "params:tokenize", "params:train", "token_cache"],
               [f"{split}_tokens", f"{split}_tokenize_quarantine", f"{split}_tokenize_stats"],
               name=f"tokenize_{split}") for split, function in SPLITS.items()],
        node(preview_masks, ["train_tokens", "base_model", "params:tokenize"],
             ["train_mask_preview", "train_length_histogram"], name="preview_masks"),
    ], namespace="sft", inputs={"base_model", "token_cache"}, parameters={"params:tokenize", "params:train"})
