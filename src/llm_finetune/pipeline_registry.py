"""Project pipelines: the registry only composes (every stage is its data pipeline + its front + its nodes)."""

from kedro.pipeline import Pipeline

from llm_finetune.pipelines import data, dpo, evaluation, export, grpo, kto, pt, rm, sft, stages, tokenize


def register_pipelines() -> dict[str, Pipeline]:
    sft_pipeline = data.create_pipeline("sft") + tokenize.create_pipeline() + sft.create_pipeline() + \
        evaluation.create_pipeline()

    def stage(name: str, nodes: Pipeline) -> Pipeline:
        return data.create_pipeline(name) + stages.create_pipeline(name) + nodes

    return {"data": data.create_pipeline("sft"), "sft": sft_pipeline, "__default__": sft_pipeline,
            "eval": evaluation.create_file_pipeline(), "export": export.create_pipeline(),
            "rm": stage("rm", rm.create_pipeline()), "dpo": stage("dpo", dpo.create_pipeline()),
            "dpo_sft": stage("dpo", dpo.create_pipeline(start_from="sft")), "kto": stage("kto", kto.create_pipeline()),
            "kto_sft": stage("kto", kto.create_pipeline(start_from="sft")), "pt": stage("pt", pt.create_pipeline()),
            "grpo": stage("grpo", grpo.create_pipeline()),
            "grpo_sft": stage("grpo", grpo.create_pipeline(start_from="sft"))}
