"""Wiring of the rm / dpo / kto / pt / grpo stages' front: preflight -> base model (-> pair tokenization for rm /
dpo, labelled-row tokenization for kto, prompts for grpo)."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.models.materialize import prepare_base_model
from llm_finetune.pipelines.stages.nodes import (
    STAGE_KINDS,
    stage_preflight,
    tokenize_labelled_split,
    tokenize_pair_split,
    tokenize_prompt_split,
)

SPLITS = ("train", "val", "test")


def create_pipeline(stage: str) -> Pipeline:
    """The ``stage``'s preflight and the base model; preference stages add pair tokens (its data: ``data``).

    Inside the namespace: ``<stage>.preflight_report`` and ``<stage>.{train,val,test}_pairs`` (kto:
    ``_labelled``); the base model, its cache and the model / tokenize parameters are shared with ``sft``.
    """
    preflight = update_wrapper(partial(stage_preflight, stage), stage_preflight)
    nodes = [
        node(preflight, ["dataset_plan", "params:model", "params:model_registry", "params:tokenize", f"params:{stage}",
                         f"params:{stage}_data"], "preflight_report", name="preflight"),
        node(prepare_base_model, ["params:model", "params:model_registry", "base_model_cache", "preflight_report"],
             ["base_model", "base_model_info"], name="prepare_base_model"),
    ]
    if STAGE_KINDS[stage] == "preference":
        nodes += [node(tokenize_pair_split, [f"{split}_records", "base_model", "params:tokenize"],
                       [f"{split}_pairs", f"{split}_pairs_quarantine", f"{split}_pairs_stats"],
                       name=f"tokenize_{split}_pairs") for split in SPLITS]
    if STAGE_KINDS[stage] == "labelled":
        nodes += [node(tokenize_labelled_split, [f"{split}_records", "base_model", "params:tokenize"],
                       [f"{split}_labelled", f"{split}_labelled_quarantine", f"{split}_labelled_stats"],
                       name=f"tokenize_{split}_labelled") for split in SPLITS]
    if STAGE_KINDS[stage] == "prompt":
        nodes += [node(tokenize_prompt_split, [f"{split}_records", "base_model", "params:tokenize"],
                       [f"{split}_prompts", f"{split}_prompts_quarantine", f"{split}_prompts_stats"],
                       name=f"tokenize_{split}_prompts") for split in SPLITS]
    front = pipeline(nodes, namespace=stage, inputs={"base_model_cache"}, outputs={"base_model", "base_model_info"},
                     parameters={"params:model", "params:model_registry", "params:tokenize", f"params:{stage}",
                                 f"params:{stage}_data"})
    return front
