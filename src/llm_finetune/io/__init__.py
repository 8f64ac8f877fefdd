"""Kedro datasets for model folders."""

from llm_finetune.io.model_folder import CacheFolderDataset, CredentialsDataset, ModelBundle, ModelFolderDataset

__all__ = ["CacheFolderDataset", "CredentialsDataset", "ModelBundle", "ModelFolderDataset"]
