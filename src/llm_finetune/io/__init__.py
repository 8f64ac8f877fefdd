"""Kedro datasets: model folders, JSON-lines records, HTML pages, cache folders, credentials."""

from llm_finetune.io.html import HTMLDataset
from llm_finetune.io.jsonl import JSONLinesDataset
from llm_finetune.io.model_folder import (CacheFolderDataset, CredentialsDataset, ModelBundle, ModelFolderDataset,
                                         NotWritten)

__all__ = ["CacheFolderDataset", "CredentialsDataset", "HTMLDataset", "JSONLinesDataset", "ModelBundle",
           "ModelFolderDataset", "NotWritten"]
