"""Wiring of the ``data`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from llm_finetune.pipelines.data.nodes import align_records, download_raw_data, split_dataset


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(download_raw_data, "params:data.source", "raw_records", name="download"),
        node(align_records, ["raw_records", "params:data"],
             ["aligned_records", "align_quarantine", "align_report"], name="align"),
        node(split_dataset, ["aligned_records", "params:data.split"],
             ["train_records", "val_records", "test_records"], name="split"),
    ])
