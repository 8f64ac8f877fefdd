"""The tokenized-split cache and the token-mask page."""

from llm_finetune.tokens.conversations import IGNORE_INDEX
from llm_finetune.tokens.packing import pack_rows
from llm_finetune.tokens.preview import length_histogram, mask_preview_html, samples_of
from llm_finetune.tokens.store import cache_key, cached, load_rows, load_side_files, store

ROWS = [{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]


def test_the_key_changes_with_records_settings_and_tokenizer(tmp_path, tiny_model_dir):
    records = [{"messages": [{"role": "user", "content": "a"}]}]
    key = cache_key(records, tiny_model_dir, {"cutoff_len": 8})
    assert key == cache_key(records, tiny_model_dir, {"cutoff_len": 8})
    assert key != cache_key(records, tiny_model_dir, {"cutoff_len": 9})
    assert key != cache_key(records + records, tiny_model_dir, {"cutoff_len": 8})
    assert key != cache_key(records, tmp_path, {"cutoff_len": 8})  # no tokenizer files there


def test_store_and_reload(tmp_path):
    assert cached(tmp_path, "k") is None
    folder = store(tmp_path, "k", pack_rows(ROWS, "greedy", 8), [{"row": 2, "reason": "x"}], {"rows": 2})
    assert cached(tmp_path, "k") == folder and not list(tmp_path.glob(".*partial"))
    [row] = load_rows(folder).to_list()
    assert row["input_ids"] == [5, 6, 7, 8, 9] and row["position_ids"] == [0, 1, 2, 0, 1]
    assert row["labels"] == [IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9] and row["sample_lengths"] == [3, 2]
    assert load_side_files(folder) == ([{"row": 2, "reason": "x"}], {"rows": 2})


def test_mask_page_marks_trained_tokens_and_packed_samples(tiny_tokenizer):
    ids = tiny_tokenizer("Say hi<|im_end|>", add_special_tokens=False).input_ids
    row = pack_rows([{"input_ids": ids, "labels": [IGNORE_INDEX] + ids[1:]},
                     {"input_ids": ids, "labels": [IGNORE_INDEX] * len(ids)}], "greedy", 64)[0]
    assert [len(s[0]) for s in samples_of(row)] == [len(ids), len(ids)]
    page = mask_preview_html([row], tiny_tokenizer, "Preview <test>")
    body = page.split("</p>", 1)[1]
    assert body.count("class='t y'") == len(ids) - 1 and body.count("class='t n cut'") == 1
    assert body.count("class='t n") == len(ids) + 1 and "&lt;|im_end|&gt;" in body
    assert "<title>Preview &lt;test&gt;</title>" in page
    figure = length_histogram([3, 5, 5, 9], 8, "lengths")
    assert figure.axes[0].get_xlabel() == "tokens per sample"


def test_the_cache_key_follows_the_tokenizing_packages_and_our_code_version(tiny_model_dir, monkeypatch):
    """Before, a tokenizers / transformers upgrade reused token ids computed by the old version."""
    import importlib.metadata

    from llm_finetune.tokens import store as store_module

    records = [{"messages": [{"role": "user", "content": "hi"}]}]
    key = cache_key(records, tiny_model_dir, {"cutoff_len": 8})
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "999.0" if name == "tokenizers" else real_version(name))
    assert cache_key(records, tiny_model_dir, {"cutoff_len": 8}) != key
    monkeypatch.setattr(importlib.metadata, "version", real_version)
    assert cache_key(records, tiny_model_dir, {"cutoff_len": 8}) == key
    monkeypatch.setattr(store_module, "TOKENS_CODE_VERSION", store_module.TOKENS_CODE_VERSION + 1)
    assert cache_key(records, tiny_model_dir, {"cutoff_len": 8}) != key
