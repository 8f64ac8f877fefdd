"""Wiring of the ``eval`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.eval.nodes import build_eval_report, read_responses_file
from llm_finetune.pipelines.evaluation.nodes import judge_responses


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(read_responses_file, ["params:eval.responses", "params:judge", "judge_credentials",
                                   "params:model_registry"], "eval_responses", name="read_responses_file"),
        node(judge_responses, ["eval_responses", "params:judge", "judge_credentials", "params:model_registry",
                               "base_model_cache"], ["eval_judgments", "eval_judge_summary"], name="judge_eval"),
        node(build_eval_report, ["eval_judgments", "eval_judge_summary", "params:report"],
             ["eval_summary_metrics", "eval_family_table", "eval_examples_table", "eval_score_histogram",
              "eval_report"], name="eval_report"),
    ])
