"""Wiring of the ``tokenize`` pipeline (used by ``sft``)."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.tokenize.nodes import preview_masks, tokenize_split


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(tokenize_split, ["train_records", "base_model", "params:tokenize", "params:train.batch_size",
                              "token_cache"], ["train_tokens", "train_tokenize_quarantine", "train_tokenize_stats"],
             name="tokenize_train"),
        node(tokenize_split, ["val_records", "base_model", "params:tokenize", "params:train.batch_size",
                              "token_cache"], ["val_tokens", "val_tokenize_quarantine", "val_tokenize_stats"],
             name="tokenize_val"),
        node(preview_masks, ["train_tokens", "base_model", "params:tokenize"],
             ["train_mask_preview", "train_length_histogram"], name="preview_masks"),
    ])
