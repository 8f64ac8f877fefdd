"""Wiring of the rm / dpo / pt stages' front: preflight -> base model (-> pair tokenization for rm / dpo)."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.models.materialize import prepare_base_model
from llm_finetune.pipelines.stages.nodes import STAGE_KINDS, stage_preflight, tokenize_pair_split

SPLITS = ("train", "val", "test")


def create_pipeline(stage: str) -> Pipeline:
    """The ``stage``'s preflight and the base model; preference stages add pair tokens (its data: ``data``).

    Inside the namespace: ``<stage>.preflight_report`` and ``<stage>.{train,val,test}_pairs``;
    the base model, its cache and the model / tokenize parameters are shared with ``sft``.
    """
    preflight = update_wrapper(partial(stage_preflight, stage), stage_preflight)
    nodes = [
        node(preflight, ["dataset_plan", "params:model", "params:model_registry", "params:tokenize", f"params:{stage}"],
             "preflight_report", name="preflight"),
        node(prepare_base_model, ["params:model", "params:model_registry", "base_model_cache", "preflight_report"],
             ["base_model", "base_model_info"], name="prepare_base_model"),
    ]
    if STAGE_KINDS[stage] == "preference":
        nodes += [node(tokenize_pair_split, [f"{split}_records", "base_model", "params:tokenize"],
                       [f"{split}_pairs", f"{split}_pairs_quarantine", f"{split}_pairs_stats"],
                       name=f"tokenize_{split}_pairs") for split in SPLITS]
    front = pipeline(nodes, namespace=stage, inputs={"base_model_cache"}, outputs={"base_model", "base_model_info"},
                     parameters={"params:model", "params:model_registry", "params:tokenize", f"params:{stage}"})
    return front
