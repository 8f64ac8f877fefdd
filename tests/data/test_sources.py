import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from llm_finetune.data.sources import SourceError, parse_bytes, read_source

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


def test_bad_json_line_names_the_line():
    blob = (json.dumps(ROWS[0]) + "\n{not json}\n").encode()
    with pytest.raises(SourceError, match="line 2"):
        parse_bytes(blob, "f.jsonl")


def test_non_utf8_and_missing_file_and_row_cap(tmp_path):
    with pytest.raises(SourceError, match="not UTF-8"):
        parse_bytes(b"[\xff\xfe]", "f.json")
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

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/data.json", hashlib.sha256(body).hexdigest()
    server.shutdown()
    server.server_close()


def test_url_with_sha256_verification(http_file):
    url, digest = http_file
    assert read_source({"url": url, "sha256": digest}) == ROWS
    with pytest.raises(SourceError, match="sha256 mismatch"):
        read_source({"url": url, "sha256": "0" * 64})


def test_hub_offline_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SourceError, match="no-such-user/no-such-dataset"):
        read_source({"hub": "no-such-user/no-such-dataset"})
