"""Wiring of the ``evaluation`` pipeline (part of ``sft``)."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.evaluation.nodes import (
    build_report,
    generate_base_responses,
    generate_tuned_responses,
    judge_responses,
    plot_report,
)

JUDGE_INPUTS = ["params:judge", "judge_credentials", "params:model_registry", "base_model_cache"]


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(generate_base_responses, ["test_records", "base_model", "params:generate", "params:tokenize"],
             ["base_responses", "base_generation_timing"], name="generate_base"),
        node(generate_tuned_responses, ["test_records", "base_model", "adapter", "params:generate"],
             ["tuned_responses", "tuned_generation_timing"], name="generate_tuned"),
        node(judge_responses, ["base_responses", *JUDGE_INPUTS], ["base_judgments", "base_judge_summary"],
             name="judge_base"),
        node(judge_responses, ["tuned_responses", *JUDGE_INPUTS], ["tuned_judgments", "tuned_judge_summary"],
             name="judge_tuned"),
        node(build_report, ["base_judgments", "tuned_judgments", "base_judge_summary", "tuned_judge_summary",
                            "train_info", "params:report"],
             ["summary_metrics", "comparison_table", "family_table", "examples_table", "evaluation_report"],
             name="report"),
        node(plot_report, ["base_judgments", "tuned_judgments", "loss_history"], ["loss_curve", "score_histogram"],
             name="plot_report"),
    ])
