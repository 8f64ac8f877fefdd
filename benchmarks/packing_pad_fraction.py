"""Pad fraction and packing efficiency of none / greedy / bfd on the book's 935 training rows.

The book's data (``../shared/data/real/book_instruction_data.json``, split the book's way),
the SmolLM2-135M-Instruct tokenizer, the alpaca template, ``cutoff_len`` 1024, batches of 8.
``pad_fraction`` is for batches in random order (the book's loader), ``..._length_grouped`` for
transformers' length-grouped sampling. Run: ``.venv/bin/python benchmarks/packing_pad_fraction.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llm_finetune.data.formats import align_alpaca, columns_for, tags_for
from llm_finetune.data.split import split_records
from llm_finetune.models.loading import load_tokenizer
from llm_finetune.tokens.conversations import TokenizeSettings, tokenize_records
from llm_finetune.tokens.packing import pack_rows, padding_stats
from llm_finetune.tokens.templates import load_template

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT.parent / "shared" / "data" / "real" / "book_instruction_data.json"
RESULTS = ROOT / "benchmarks" / "results" / "packing_pad_fraction.json"
CUTOFF, BATCH = 1024, 8


def main() -> None:
    if not BOOK.is_file():
        sys.exit(f"{BOOK} is absent")
    caches = sorted((ROOT / "data" / "06_models" / "base_model_cache").glob("smollm2-135m-instruct-*"))
    if not caches:
        sys.exit("run `make run` once to materialise the SmolLM2 base model")
    tokenizer = load_tokenizer(caches[-1])
    rows = json.loads(BOOK.read_text())
    records = [align_alpaca(row, columns_for("alpaca", None), tags_for("alpaca", None)) for row in rows]
    train, _, _ = split_records(records, 0.85, 0.10, seed=0, mode="ordered")
    tokens, quarantined = tokenize_records(train, TokenizeSettings(load_template("alpaca"), CUTOFF), tokenizer)
    results = {"rows": len(tokens), "quarantined": len(quarantined), "cutoff_len": CUTOFF, "batch_size": BATCH,
               "tokens": sum(len(r["input_ids"]) for r in tokens), "modes": {}}
    for mode in ("none", "greedy", "bfd"):
        packed = pack_rows(tokens, mode, CUTOFF)
        stats = padding_stats([len(r["input_ids"]) for r in packed], BATCH, CUTOFF)
        results["modes"][mode] = {"training_rows": len(packed)} | stats
        print(f"{mode:7s} rows {len(packed):4d}  pad fraction {stats['pad_fraction']:.3f} "
              f"(length-grouped {stats['pad_fraction_length_grouped']:.3f})  "
              f"packing efficiency {stats['packing_efficiency']:.3f}")
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
