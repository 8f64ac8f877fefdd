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
    write_model_card,
)

JUDGE_INPUTS = ["params:judge", "judge_credentials", "params:model_registry", "base_model_cache"]
SHARED = {"judge_credentials", "base_model_cache"}
JUDGE_PARAMS = {"params:judge", "params:model_registry", "params:report"}


def create_pipeline(**kwargs) -> Pipeline:
    """Generate for the base and the tuned model, judge both, report (in the ``sft`` namespace)."""
    return pipeline([
        node(generate_base_responses, ["test_records", "base_model", "params:generate", "params:tokenize"],
             ["base_responses", "base_generation_timing"], name="generate_base"),
        node(generate_tuned_responses, ["test_records", "base_model", "adapter", "params:generate"],
             ["tuned_responses", "tuned_generation_timing"], name="generate_tuned"),
        *[node(judge_responses, [f"{model}_responses", *JUDGE_INPUTS],
               [f"{model}_judgments", f"{model}_judge_summary"], name=f"judge_{model}") for model in ("base", "tuned")],
        node(build_report, ["base_judgments", "tuned_judgments", "base_judge_summary", "tuned_judge_summary",
                            "train_info", "params:report"],
             ["summary_metrics", "comparison_table", "family_table", "examples_table", "report"], name="report"),
        node(plot_report, ["base_judgments", "tuned_judgments", "loss_history"], ["loss_curve", "score_histogram"],
             name="plot_report"),
        node(write_model_card, ["adapter", "base_model", "base_model_info", "dataset_plan", "align_report",
                                "train_info", "summary_metrics", "params:judge", "params:model",
                                "params:model_registry"], "model_card", name="model_card"),
    ], namespace="sft", inputs=SHARED | {"base_model", "base_model_info"},
        parameters=JUDGE_PARAMS | {"params:generate", "params:tokenize", "params:model"})


def create_file_pipeline(**kwargs) -> Pipeline:
    """``eval``: judge and report a responses file (``eval.responses``), no model needed."""
    return pipeline([
        node(read_responses_file, ["params:eval.responses", "params:judge", "judge_credentials",
                                   "params:model_registry"], "file_responses", name="read_responses_file"),
        node(judge_responses, ["file_responses", *JUDGE_INPUTS], ["file_judgments", "file_judge_summary"],
             name="judge_file"),
        node(build_eval_report, ["file_judgments", "file_judge_summary", "params:report"],
             ["summary_metrics", "family_table", "examples_table", "score_histogram", "report"], name="report"),
    ], namespace="eval", inputs=SHARED, parameters=JUDGE_PARAMS | {"params:eval.responses"})
