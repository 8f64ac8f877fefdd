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


class CrashingSavable:
    """Writes part of its weights, then fails: a run killed or out of disk in the middle of a save."""

    def save_pretrained(self, folder):
        (folder / "adapter_model.safetensors").write_text("half of the weights")
        raise OSError("No space left on device")


def test_a_failed_save_leaves_no_version_to_load(tmp_path):
    """Before, the bundle was written straight into the version folder: the half-written folder became
    the latest version, loadable by the next run."""
    dataset = ModelFolderDataset(str(tmp_path / "adapter"), required_files=["prompt_template.json"], weights=True,
                                 version=Version(None, None))
    with pytest.raises(DatasetError, match="No space left"):  # kedro wraps the OSError
        dataset.save(ModelBundle(model=CrashingSavable(), files={"prompt_template.json": "{}"}))
    assert not dataset.exists()
    assert list((tmp_path / "adapter").rglob("*.safetensors")) == []
    with pytest.raises(DatasetError):
        ModelFolderDataset(str(tmp_path / "adapter"), version=Version(None, None)).load()


def test_weights_are_required_where_the_catalog_asks_for_them(tmp_path):
    dataset = ModelFolderDataset(str(tmp_path / "adapter"), required_files=["prompt_template.json"], weights=True,
                                 version=Version(None, None))
    with pytest.raises(DatasetError, match=r"lacks weights \(one of adapter_model.safetensors"):
        dataset.save(ModelBundle(files={"prompt_template.json": "{}"}))
    assert not dataset.exists()
    dataset.save(ModelBundle(model=FakeSavable("model.safetensors"), files={"prompt_template.json": "{}"}))
    assert (dataset.load() / "model.safetensors").is_file()


def test_a_sharded_checkpoint_is_accepted_with_every_shard_its_index_names(tmp_path):
    import json

    source = tmp_path / "sharded"
    source.mkdir()
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    (source / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shards[0], "b": shards[1]}}))
    (source / "config.json").write_text("{}")
    (source / shards[0]).write_text("x")
    dataset = ModelFolderDataset(str(tmp_path / "base"), required_files=["config.json"], weights=True,
                                 version=Version(None, None))
    with pytest.raises(DatasetError, match="lacks model-00002-of-00002.safetensors"):
        dataset.save(source)
    (source / shards[1]).write_text("y")
    dataset.save(source)
    assert sorted(p.name for p in dataset.load().glob("*.safetensors")) == shards


def test_an_output_switched_off_writes_no_version_folder(tmp_path):
    from kedro.io.core import Version

    from llm_finetune.io import NotWritten

    first = ModelFolderDataset(filepath=str(tmp_path / "gguf"), version=Version(None, "2026-01-01T00.00.00.000Z"))
    first.save(NotWritten("export.format is merged"))  # no version exists yet: kedro's post-save check must pass
    assert not (tmp_path / "gguf").exists() and not first.exists()
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a")
    ModelFolderDataset(filepath=str(tmp_path / "gguf"), version=Version(None, "2026-01-02T00.00.00.000Z")).save(source)
    later = ModelFolderDataset(filepath=str(tmp_path / "gguf"), version=Version(None, "2026-01-03T00.00.00.000Z"))
    later.save(NotWritten("export.format is merged"))
    assert [p.name for p in (tmp_path / "gguf").iterdir()] == ["2026-01-02T00.00.00.000Z"]
    assert later.load().parent.name == "2026-01-02T00.00.00.000Z"
