"""Write ``data/01_raw/demo_responses.json``: a small responses file for the ``eval`` pipeline.

The rows are demo instructions (``data/01_raw/demo_instructions.json``, written for this
project) with a ``model_response`` in the book's ``instruction-data-with-response`` layout:
some correct, some verbose, some wrong, so that every judge has something to tell apart.
Deterministic: ``python tools/make_demo_responses.py``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("exact", "verbose", "wrong")


def respond(row: dict, kind: str, rng: random.Random) -> str:
    if kind == "exact":
        return row["output"]
    if kind == "verbose":
        return f"Sure! The answer is: {row['output']}. Let me know if you need anything else."
    return rng.choice(["I am not sure.", "42", "It depends on the context.", row["instruction"]])


def main(rows: int = 40, seed: int = 7) -> None:
    rng = random.Random(seed)
    source = json.loads((ROOT / "data/01_raw/demo_instructions.json").read_text(encoding="utf-8"))
    picked = rng.sample(source, rows)
    out = [{"instruction": r["instruction"], "input": r["input"], "output": r["output"], "family": r["family"],
            "verifiable": r["verifiable"], "model_response": respond(r, KINDS[i % 3], rng)}
           for i, r in enumerate(picked)]
    target = ROOT / "data/01_raw/demo_responses.json"
    target.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
