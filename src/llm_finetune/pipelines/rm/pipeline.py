"""Wiring of the ``rm`` stage (its data, base model and pair tokens come from ``pipelines/stages``).

In the ``rm`` namespace: nodes ``rm.train`` and ``rm.evaluate``, datasets ``rm.train_pairs``,
``rm.reward_model``, ``rm.loss_history``, ``rm.metrics``; the shared base model is not namespaced.
"""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.rm.nodes import evaluate_rm, train_rm


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(train_rm, ["train_pairs", "val_pairs", "base_model", "base_model_info", "params:tokenize", "params:rm",
                        "train_checkpoints"], ["reward_model", "loss_history"], name="train"),
        node(evaluate_rm, ["test_pairs", "reward_model", "base_model", "params:rm"], "metrics", name="evaluate"),
    ], namespace="rm", inputs={"base_model", "base_model_info", "train_checkpoints"}, parameters={"params:tokenize", "params:rm"})
