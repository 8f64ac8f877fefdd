"""Project pipelines."""

from kedro.pipeline import Pipeline

from llm_finetune.pipelines import data, evaluation, export, sft, tokenize
from llm_finetune.pipelines import eval as eval_pipeline


def register_pipelines() -> dict[str, Pipeline]:
    data_pipeline = data.create_pipeline()
    sft_pipeline = data_pipeline + tokenize.create_pipeline() + sft.create_pipeline() + evaluation.create_pipeline()
    return {"data": data_pipeline, "sft": sft_pipeline, "eval": eval_pipeline.create_pipeline(),
            "export": export.create_pipeline(), "__default__": sft_pipeline}
