import pytest
from kedro.io import DatasetError, Version

from llm_finetune.io import CacheFolderDataset, CredentialsDataset, ModelBundle, ModelFolderDataset


class FakeSavable:
    """Stands in for a model: writes one file with save_pretrained (like transformers/peft)."""

    def __init__(self, name):
        self.name = name

    def save_pretrained(self, folder):
        (folder / self.name).write_text("weights")


def test_bundle_is_saved_and_loaded_as_a_versioned_folder(tmp_path):
    dataset = ModelFolderDataset(str(tmp_path / "adapter"), required_files=["adapter_model.safetensors"],
                                 version=Version(None, None))
    bundle = ModelBundle(model=FakeSavable("adapter_model.safetensors"), files={"prompt_template.json": {"template": "alpaca"}})
    dataset.save(bundle)
    folder = dataset.load()
    assert folder == dataset.last_saved_path
    assert folder.parent.parent == tmp_path / "adapter"  # adapter/<version>/adapter
    assert '"alpaca"' in (folder / "prompt_template.json").read_text()


def test_saving_a_folder_hard_links_it(tmp_path):
    source = tmp_path / "cache"
    source.mkdir()
    (source / "model.safetensors").write_text("x" * 100)
    dataset = ModelFolderDataset(str(tmp_path / "base"), version=Version(None, None))
    dataset.save(source)
    saved = dataset.load() / "model.safetensors"
    assert saved.read_text() == "x" * 100
    assert saved.stat().st_ino == (source / "model.safetensors").stat().st_ino


def test_missing_required_file_fails_on_save(tmp_path):
    dataset = ModelFolderDataset(str(tmp_path / "m"), required_files=["config.json"])
    with pytest.raises(DatasetError, match="lacks config.json"):
        dataset.save(ModelBundle(files={"readme.txt": "hi"}))
    with pytest.raises(DatasetError, match="folder path or a ModelBundle"):
        dataset.save(42)


def test_cache_and_credentials_datasets(tmp_path):
    cache = CacheFolderDataset(str(tmp_path / "cache"))
    assert cache.load().is_dir()
    creds = CredentialsDataset({"api_key": "sk-secret"})
    assert creds.load() == {"api_key": "sk-secret"}
    assert "sk-secret" not in str(creds._describe())
