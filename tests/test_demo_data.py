"""Checks on the committed demo dataset ``data/01_raw/demo_instructions.json``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "01_raw" / "demo_instructions.json"
SCRIPT = ROOT / "tools" / "make_demo_data.py"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return json.loads(DATA.read_text(encoding="utf-8"))


def test_row_count(rows):
    assert isinstance(rows, list)
    assert len(rows) >= 1000


def test_row_schema(rows):
    for i, row in enumerate(rows):
        assert set(row) == {"instruction", "input", "output", "family", "verifiable"}, i
        assert isinstance(row["instruction"], str) and row["instruction"].strip(), i
        assert isinstance(row["input"], str), i
        assert isinstance(row["output"], str) and row["output"].strip(), i
        assert isinstance(row["family"], str) and row["family"], i
        assert isinstance(row["verifiable"], bool), i


def test_no_duplicates(rows):
    keys = Counter((r["instruction"].strip(), r["input"].strip()) for r in rows)
    dupes = [k for k, n in keys.items() if n > 1]
    assert not dupes, dupes[:5]


def test_families(rows):
    families = {r["family"] for r in rows}
    expected = set(load_tool("make_demo_data").FAMILIES)
    assert len(families) >= 15
    assert expected <= families, expected - families
    # a family is either wholly verifiable or wholly free text
    for family in families:
        assert len({r["verifiable"] for r in rows if r["family"] == family}) == 1, family


def test_verifiable_share(rows):
    share = sum(r["verifiable"] for r in rows) / len(rows)
    assert share >= 0.40, share


def test_generator_reproduces_committed_file(tmp_path):
    out = tmp_path / "demo_instructions.json"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, cwd=ROOT,
                   capture_output=True)
    assert out.read_bytes() == DATA.read_bytes()
