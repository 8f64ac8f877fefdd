import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from llm_finetune.data.sources import SourceError, detect_file_type, load_source, parse_bytes, read_source

ROWS = [{"instruction": "Add 2 and 3.", "input": "", "output": "5"}, {"instruction": "Say hi", "input": "", "output": "hi"}]


def test_json_array_and_json_lines_are_told_apart_by_content_not_suffix(tmp_path):
    as_lines = tmp_path / "data.json"  # JSON lines behind a .json suffix
    as_lines.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    as_array = tmp_path / "data.jsonl"  # a JSON array behind a .jsonl suffix
    as_array.write_text(json.dumps(ROWS))
    assert read_source({"path": str(as_lines)}) == ROWS
    assert read_source({"path": str(as_array)}) == ROWS


def test_csv_and_parquet(tmp_path):
    pd.DataFrame(ROWS).to_csv(tmp_path / "rows.txt", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "rows.bin")
    assert read_source({"path": str(tmp_path / "rows.txt")}) == ROWS
    assert read_source({"path": str(tmp_path / "rows.bin")}) == ROWS


def test_bad_json_lines_are_kept_as_unreadable_with_line_numbers(tmp_path):
    blob = (json.dumps(ROWS[0]) + "\n{not json}\n\n[1, 2]\n" + json.dumps(ROWS[1]) + "\nbad \xff byte\n").encode("latin-1")
    raw = parse_bytes(blob, "f.jsonl")
    assert raw.file_type == "jsonl" and raw.records == ROWS and raw.lines == [1, 5]
    assert [(u["line"], u["reason"]) for u in raw.unreadable] == [
        (2, "invalid JSON"), (4, "row is not an object"), (6, "not UTF-8")]
    (tmp_path / "f.jsonl").write_bytes(blob)
    with pytest.raises(SourceError, match="f.jsonl: line 2: invalid JSON"):
        read_source({"path": str(tmp_path / "f.jsonl")})


def test_whole_file_errors_name_line_and_column():
    with pytest.raises(SourceError, match="not UTF-8 text \\(byte 2, line 2\\)"):
        parse_bytes(b"[\n\xff\xfe]", "f.json")
    with pytest.raises(SourceError, match="f.json: invalid JSON at line 2, column 1"):
        parse_bytes(b'[{"a": 1},\n}', "f.json")
    with pytest.raises(SourceError, match="CSV line 3 has 3 fields, the header 2"):
        parse_bytes(b"instruction,output\na,b\nc,d,e\n", "f.csv")


def test_text_files_folders_and_wrapped_json(tmp_path):
    assert detect_file_type(b"The cat sat.\nOn the mat, twice.\n") == "text"
    assert parse_bytes(b"The cat sat.\n\nOn the mat.\n", "t.txt").records == [{"text": "The cat sat."},
                                                                              {"text": "On the mat."}]
    assert parse_bytes(json.dumps({"data": ROWS}).encode(), "w.json").records == ROWS
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    (folder / "b.json").write_text(json.dumps([ROWS[1]]))
    raw = load_source({"path": str(folder)})
    assert raw.records == ROWS and raw.files == [str(folder / "a.jsonl"), str(folder / "b.json")]
    assert raw.lines == [1, None]


def test_non_utf8_and_missing_file_and_row_cap(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        read_source({"path": str(tmp_path / "nope.json")})
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    assert read_source({"path": str(tmp_path / "d.json"), "max_rows": 1}) == ROWS[:1]


def test_exactly_one_source_kind():
    with pytest.raises(SourceError, match="exactly one"):
        read_source({"path": "a.json", "url": "http://x"})


@pytest.fixture
def http_file():
    body = json.dumps(ROWS).encode()
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            if self.path != "/data.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/data.json", hashlib.sha256(body).hexdigest(), hits
    server.shutdown()
    server.server_close()


def test_url_with_sha256_verification_and_cache(http_file, tmp_path):
    url, digest, hits = http_file
    assert read_source({"url": url, "sha256": digest}) == ROWS
    with pytest.raises(SourceError, match="sha256 mismatch"):
        read_source({"url": url, "sha256": "0" * 64})
    assert load_source({"url": url, "sha256": digest}, cache_dir=tmp_path).records == ROWS
    before = len(hits)
    assert load_source({"url": url, "sha256": digest}, cache_dir=tmp_path).records == ROWS
    assert len(hits) == before  # the second read came from the cache, not the server
    with pytest.raises(SourceError, match="Could not download .*/missing"):
        load_source({"url": url.rsplit("/", 1)[0] + "/missing"})


def test_hub_offline_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SourceError, match="no-such-user/no-such-dataset"):
        read_source({"hub": "no-such-user/no-such-dataset"})
