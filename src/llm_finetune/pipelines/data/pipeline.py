"""Wiring of the ``data`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.data.nodes import (
    align_records, check_contamination, download_raw_data, resolve_dataset_plan, split_dataset,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(resolve_dataset_plan, ["params:data", "params:datasets"], "dataset_plan", name="resolve_datasets"),
        node(download_raw_data, ["dataset_plan", "params:data.cache_dir"], "raw_datasets", name="download"),
        node(align_records, ["raw_datasets", "dataset_plan", "params:data"],
             ["aligned_records", "align_quarantine", "align_report"], name="align"),
        node(split_dataset, ["aligned_records", "params:data.split"],
             ["split_train_records", "val_records", "test_records"], name="split"),
        node(check_contamination, ["split_train_records", "val_records", "test_records", "params:data.contamination"],
             ["train_records", "contamination_report", "contamination_pairs"], name="check_contamination"),
    ])


def create_stage_pipeline(stage: str) -> Pipeline:
    """The data pipeline in ``stage``'s namespace (``rm.train_records``, ...), configured by ``<stage>_data``."""
    block = f"params:{stage}_data"
    return pipeline(create_pipeline(), namespace=stage, parameters={
        "params:data": block, "params:data.cache_dir": f"{block}.cache_dir", "params:data.split": f"{block}.split",
        "params:data.contamination": f"{block}.contamination", "params:datasets": "params:datasets"})
