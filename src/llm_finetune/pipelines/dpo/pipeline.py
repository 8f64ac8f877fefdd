"""Wiring of the ``dpo`` stage nodes (the shared front, data to pair tokens, is in ``pipelines/stages``).

``start_from="base"`` (pipeline ``dpo``) trains on the base model; ``start_from="sft"`` (pipeline
``dpo_sft``) starts from the SFT adapter ``adapter`` (latest version, or ``--load-versions adapter:<v>``).
"""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.dpo.nodes import evaluate_dpo, reference_logps, train_dpo

START_POINTS = ("base", "sft")


def create_pipeline(start_from: str = "base", **kwargs) -> Pipeline:
    if start_from not in START_POINTS:
        raise ValueError(f"dpo start_from {start_from!r} is not one of {START_POINTS}")
    start = ["adapter"] if start_from == "sft" else []
    return pipeline([
        node(reference_logps, ["dpo.train_pairs", "dpo.val_pairs", "base_model", "base_model_info", "params:tokenize",
                               "params:dpo", "dpo.reference_cache", *start], "dpo.reference_logps",
             name="dpo.compute_reference_logps"),
        node(train_dpo, ["dpo.train_pairs", "dpo.val_pairs", "dpo.reference_logps", "base_model", "base_model_info",
                         "params:tokenize", "params:dpo", "train_checkpoints", *start],
             ["dpo.adapter", "dpo.loss_history", "dpo.train_info"], name="dpo.train"),
        node(evaluate_dpo, ["dpo.test_pairs", "dpo.adapter", "base_model", "dpo.train_info", "params:dpo", *start],
             "dpo.metrics", name="dpo.evaluate"),
    ])
