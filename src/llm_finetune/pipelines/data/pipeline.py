"""Wiring of the ``data`` pipeline, in a stage's namespace (``sft.train_records``, ``rm.train_records``, ...)."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.data.nodes import (
    align_records,
    check_contamination,
    download_raw_data,
    resolve_dataset_plan,
    split_dataset,
)


def data_params(stage: str) -> str:
    """The parameters block of a stage's data: ``data`` for sft, ``<stage>_data`` for the others."""
    return "params:data" if stage == "sft" else f"params:{stage}_data"


def create_pipeline(stage: str = "sft", **kwargs) -> Pipeline:
    block = data_params(stage)
    return pipeline([
        node(resolve_dataset_plan, ["params:data", "params:datasets"], "dataset_plan", name="resolve_datasets"),
        node(download_raw_data, ["dataset_plan", "params:data.cache_dir"], "raw_datasets", name="download"),
        node(align_records, ["raw_datasets", "dataset_plan", "params:data"],
             ["aligned_records", "align_quarantine", "align_report"], name="align"),
        node(split_dataset, ["aligned_records", "params:data.split"],
             ["split_train_records", "val_records", "test_records"], name="split"),
        node(check_contamination, ["split_train_records", "val_records", "test_records", "params:data.contamination"],
             ["train_records", "contamination_report", "contamination_pairs"], name="check_contamination"),
    ], namespace=stage, parameters={
        "params:data": block, "params:data.cache_dir": f"{block}.cache_dir", "params:data.split": f"{block}.split",
        "params:data.contamination": f"{block}.contamination", "params:datasets": "params:datasets"})
