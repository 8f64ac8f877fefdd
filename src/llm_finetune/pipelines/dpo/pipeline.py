"""Wiring of the ``dpo`` stage nodes (the shared front, data to pair tokens, is in ``pipelines/stages``).

``start_from="base"`` (pipeline ``dpo``) trains on the base model; ``start_from="sft"`` (pipeline
``dpo_sft``) starts from the SFT adapter ``sft.adapter`` (latest version, or ``--load-versions sft.adapter:<v>``).
"""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.dpo.nodes import evaluate_dpo, reference_logps, train_dpo

START_POINTS = ("base", "sft")


def create_pipeline(start_from: str = "base", **kwargs) -> Pipeline:
    if start_from not in START_POINTS:
        raise ValueError(f"dpo start_from {start_from!r} is not one of {START_POINTS}")
    start = ["sft.adapter"] if start_from == "sft" else []
    return pipeline([
        node(reference_logps, ["train_pairs", "val_pairs", "base_model", "base_model_info", "params:tokenize",
                               "params:dpo", "reference_cache", *start], "reference_logps",
             name="compute_reference_logps"),
        node(train_dpo, ["train_pairs", "val_pairs", "reference_logps", "base_model", "base_model_info",
                         "params:tokenize", "params:dpo", "train_checkpoints", *start],
             ["adapter", "loss_history", "train_info"], name="train"),
        node(evaluate_dpo, ["test_pairs", "adapter", "base_model", "train_info", "params:dpo", *start], "metrics",
             name="evaluate"),
    ], namespace="dpo", inputs={"base_model", "base_model_info", "train_checkpoints", *start},
        parameters={"params:tokenize", "params:dpo"})
