"""Kedro datasets: model folders, JSON-lines records, cache folders, credentials."""

from llm_finetune.io.jsonl import JSONLinesDataset
from llm_finetune.io.model_folder import CacheFolderDataset, CredentialsDataset, ModelBundle, ModelFolderDataset

__all__ = ["CacheFolderDataset", "CredentialsDataset", "JSONLinesDataset", "ModelBundle", "ModelFolderDataset"]
