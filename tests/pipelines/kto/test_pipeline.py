"""The ``kto`` and ``kto_sft`` pipelines in process: labelled rows -> reference log-probs -> KTO adapter ->
held-out metrics, on LLaMA-Factory's kto_tag layout and on preference pairs."""

import json

import pytest

from tests.pipelines.in_process import digests, run_in_process, users_model
from tests.pipelines.test_sft_e2e import scratch_project
from tests.training.objectives.test_kto import labelled_records
from tests.training.test_numbers_unchanged import preference_file

pytestmark = pytest.mark.e2e


def kto_file(project, count: int = 80) -> dict:
    """``count`` rows in LLaMA-Factory's kto_en_demo layout (sharegpt messages + a boolean label column)."""
    rows = [{"messages": r["messages"], "label": r["label"]} for r in labelled_records(count)]
    (project / "data" / "01_raw" / "kto.json").write_text(json.dumps(rows))
    return {"datasets.kto_rows.path": str(project / "data" / "01_raw" / "kto.json"), "datasets.kto_rows.format": "sharegpt",
            "datasets.kto_rows.columns": {"messages": "messages", "kto_tag": "label"},
            "datasets.kto_rows.tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                       "assistant_tag": "assistant"},
            "kto_data.datasets": "kto_rows", "kto_data.split.mode": "ordered"}


def test_kto_pipelines_write_every_dataset(tmp_path_factory, tiny_model_dir, tiny_tokenizer, monkeypatch):
    from kedro.io.core import generate_timestamp

    from tests.training.objectives.test_dpo import sft_adapter

    project = scratch_project(tmp_path_factory, "wiring-kto")
    model_params, before, folder = users_model(tmp_path_factory, tiny_model_dir)
    catalog, missing = run_in_process(project, "kto", kto_file(project) | model_params, monkeypatch)
    metrics = catalog.load("kto.metrics")
    assert missing == [] and metrics["start_from"] == "base" and metrics["start"]["rewards/accuracies"] == 0.0
    stats = catalog.load("kto.train_labelled_stats")
    assert stats["desirable"] > 0 and stats["undesirable"] > 0  # kto_data keeps the undesirable rows
    assert "pairwise_accuracy" not in metrics["tuned"]  # unpaired rows
    info = catalog.load("base_model_info")
    sft_adapter(tiny_model_dir, tiny_tokenizer, project / "data/06_models/sft/adapter" / generate_timestamp() / "adapter",
                info=info)
    params = preference_file(project, "kto") | model_params  # paired data: chosen desirable, rejected not
    catalog, missing = run_in_process(project, "kto_sft", params, monkeypatch)
    metrics = catalog.load("kto.metrics")
    assert missing == [] and metrics["start_from"] == "sft" and "pairwise_accuracy" in metrics["tuned"]
    assert digests(folder) == before  # the user's own model folder is untouched by kto and kto_sft


def test_kto_refuses_data_whose_undesirable_rows_are_quarantined(tmp_path_factory, tiny_model_dir, monkeypatch):
    project = scratch_project(tmp_path_factory, "wiring-kto-quarantine")
    model_params, _, _ = users_model(tmp_path_factory, tiny_model_dir)
    params = kto_file(project) | model_params | {"kto_data.undesirable": "quarantine"}
    with pytest.raises(Exception, match="kto_data.undesirable: keep"):
        run_in_process(project, "kto", params, monkeypatch)
