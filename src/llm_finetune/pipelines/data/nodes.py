"""Nodes of the ``data`` pipeline."""

from __future__ import annotations

from llm_finetune.data.align import align_alpaca, alignment_report
from llm_finetune.data.sources import read_source
from llm_finetune.data.split import split_records

FORMATS = ("alpaca",)


def download_raw_data(source: dict) -> list[dict]:
    """Read the configured source (``data.source``: path | url + sha256 | hub) into a raw snapshot."""
    return read_source(source)


def align_records(raw_records: list[dict], data_params: dict) -> tuple[list[dict], list[dict], dict]:
    """Align raw rows to the canonical schema (``data.format``, ``data.columns``).

    Returns the aligned records, the quarantined rows with reasons, and the counts;
    fails when more than ``data.max_quarantine_share`` of the rows are unusable.
    """
    if data_params["format"] not in FORMATS:
        raise ValueError(f"data.format {data_params['format']!r} is not supported; choose one of {FORMATS}")
    aligned, quarantined = align_alpaca(raw_records, data_params.get("columns"))
    report = alignment_report(len(raw_records), aligned, quarantined, data_params["max_quarantine_share"])
    return aligned, quarantined, report


def split_dataset(aligned_records: list[dict], split_params: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """Split into train / val / test (``data.split``: train_fraction, test_fraction, seed, shuffle)."""
    return split_records(aligned_records, split_params["train_fraction"], split_params["test_fraction"],
                         split_params["seed"], split_params.get("shuffle", True))
