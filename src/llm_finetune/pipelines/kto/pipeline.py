"""Wiring of the ``kto`` stage nodes (the shared front, data to labelled rows, is in ``pipelines/stages``).

``start_from="base"`` (pipeline ``kto``) trains on the base model; ``start_from="sft"`` (pipeline
``kto_sft``) starts from the SFT adapter ``sft.adapter`` (latest version, or ``--load-versions sft.adapter:<v>``).
"""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.kto.nodes import evaluate_kto, reference_logps, train_kto

START_POINTS = ("base", "sft")


def create_pipeline(start_from: str = "base", **kwargs) -> Pipeline:
    if start_from not in START_POINTS:
        raise ValueError(f"kto start_from {start_from!r} is not one of {START_POINTS}")
    start = ["sft.adapter"] if start_from == "sft" else []
    return pipeline([
        node(reference_logps, ["train_labelled", "val_labelled", "base_model", "base_model_info", "params:tokenize",
                               "params:kto", "reference_cache", *start], "reference_logps",
             name="compute_reference_logps"),
        node(train_kto, ["train_labelled", "val_labelled", "reference_logps", "base_model", "base_model_info",
                         "params:tokenize", "params:kto", "train_checkpoints", *start],
             ["adapter", "loss_history", "train_info"], name="train"),
        node(evaluate_kto, ["test_labelled", "adapter", "base_model", "train_info", "params:tokenize", "params:kto",
                            *start], "metrics", name="evaluate"),
    ], namespace="kto", inputs={"base_model", "base_model_info", "train_checkpoints", *start},
        parameters={"params:tokenize", "params:kto"})
