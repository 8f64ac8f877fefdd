"""Wiring of the evaluation pipelines: base vs tuned (part of ``sft``), and ``eval`` (score a responses file)."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.evaluation.nodes import (
    build_eval_report,
    build_report,
    generate_base_responses,
    generate_tuned_responses,
    judge_responses,
    plot_report,
    read_responses_file,
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


def create_file_pipeline(**kwargs) -> Pipeline:
    """``eval``: judge and report a responses file (``eval.responses``), no model needed."""
    return pipeline([
        node(read_responses_file, ["params:eval.responses", "params:judge", "judge_credentials",
                                   "params:model_registry"], "eval_responses", name="read_responses_file"),
        node(judge_responses, ["eval_responses", *JUDGE_INPUTS], ["eval_judgments", "eval_judge_summary"],
             name="judge_eval"),
        node(build_eval_report, ["eval_judgments", "eval_judge_summary", "params:report"],
             ["eval_summary_metrics", "eval_family_table", "eval_examples_table", "eval_score_histogram",
              "eval_report"], name="eval_report"),
    ])
