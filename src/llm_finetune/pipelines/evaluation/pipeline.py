"""Wiring of the ``evaluation`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.evaluation.nodes import (
    build_report,
    generate_base_responses,
    generate_tuned_responses,
    judge_responses,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(generate_base_responses, ["test_records", "base_model", "params:generate", "params:tokenize"],
             "base_responses", name="generate_base"),
        node(generate_tuned_responses, ["test_records", "base_model", "adapter", "params:generate"],
             "tuned_responses", name="generate_tuned"),
        node(judge_responses, ["base_responses", "params:judge", "judge_credentials"],
             ["base_judgments", "base_judge_summary"], name="judge_base"),
        node(judge_responses, ["tuned_responses", "params:judge", "judge_credentials"],
             ["tuned_judgments", "tuned_judge_summary"], name="judge_tuned"),
        node(build_report, ["base_judgments", "tuned_judgments", "base_judge_summary", "tuned_judge_summary",
                            "loss_history", "train_info"], ["summary_metrics", "loss_curve", "comparison_table"],
             name="report"),
    ])
