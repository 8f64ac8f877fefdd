"""Project pipelines."""

from kedro.pipeline import Pipeline

from llm_finetune.pipelines import data, dpo, evaluation, export, pt, rm, sft, stages, tokenize


def register_pipelines() -> dict[str, Pipeline]:
    data_pipeline = data.create_pipeline()
    sft_pipeline = data_pipeline + tokenize.create_pipeline() + sft.create_pipeline() + evaluation.create_pipeline()
    return {"data": data_pipeline, "sft": sft_pipeline, "eval": evaluation.create_file_pipeline(),
            "export": export.create_pipeline(), "__default__": sft_pipeline,
            "rm": stages.create_pipeline("rm") + rm.create_pipeline(),
            "dpo": stages.create_pipeline("dpo") + dpo.create_pipeline(),
            "dpo_sft": stages.create_pipeline("dpo") + dpo.create_pipeline(start_from="sft"),
            "pt": stages.create_pipeline("pt") + pt.create_pipeline()}
