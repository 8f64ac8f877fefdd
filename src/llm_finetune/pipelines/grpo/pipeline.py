"""Wiring of the ``grpo`` stage nodes (the shared front, data to prompts, is in ``pipelines/stages``).

``start_from="base"`` (pipeline ``grpo``) trains on the base model; ``start_from="sft"`` (``grpo_sft``)
starts from the SFT adapter ``sft.adapter`` (latest version, or ``--load-versions sft.adapter:<v>``).
"""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.grpo.nodes import evaluate_grpo, plot_rewards, train_grpo

START_POINTS = ("base", "sft")


def create_pipeline(start_from: str = "base", **kwargs) -> Pipeline:
    if start_from not in START_POINTS:
        raise ValueError(f"grpo start_from {start_from!r} is not one of {START_POINTS}")
    start = ["sft.adapter"] if start_from == "sft" else []
    return pipeline([
        node(train_grpo, ["train_prompts", "val_prompts", "base_model", "base_model_info", "params:tokenize",
                          "params:grpo", "train_checkpoints", *start],
             ["adapter", "loss_history", "train_info", "completions"], name="train"),
        node(plot_rewards, "loss_history", "reward_curve", name="plot_rewards"),
        node(evaluate_grpo, ["test_prompts", "adapter", "base_model", "train_info", "params:tokenize", "params:grpo",
                             *start], "metrics", name="evaluate"),
    ], namespace="grpo", inputs={"base_model", "base_model_info", "train_checkpoints", *start},
        parameters={"params:tokenize", "params:grpo"})
