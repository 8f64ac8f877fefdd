"""Generate the demo KTO rows: unpaired answers labelled desirable or undesirable (thumbs up / down).

Writes ``data/01_raw/demo_kto.json`` in LLaMA-Factory's ``kto_en_demo`` layout (sharegpt
``messages`` with ``role`` / ``content``, and a boolean ``label``), one row per pair of
``data/01_raw/demo_preferences.json``: deterministically per row (``random.Random(seed)``), either the
pair's chosen answer with ``label: true`` or its rejected answer with ``label: false``. The rows are
unpaired, as KTO data is: a prompt appears once, with one answer. Written here from the project's own
demo data; nothing is copied from an existing dataset. Run from the project root::

    python tools/make_demo_kto.py [--out PATH] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "data" / "01_raw" / "demo_preferences.json"
DEFAULT_OUT = ROOT / "data" / "01_raw" / "demo_kto.json"
DEFAULT_SEED = 2468
DESIRABLE_SHARE = 0.5


def make_rows(pairs: list[dict], seed: int = DEFAULT_SEED) -> list[dict]:
    """One labelled row per preference pair (see the module docstring), in the pairs' order."""
    draw = random.Random(seed)
    rows = []
    for pair in pairs:
        prompt = f"{pair['instruction']}\n\n{pair['input']}" if pair["input"] else pair["instruction"]
        desirable = draw.random() < DESIRABLE_SHARE
        answer = pair["chosen"] if desirable else pair["rejected"]
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                     "label": desirable})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    rows = make_rows(json.loads(SOURCE.read_text(encoding="utf-8")), args.seed)
    args.out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"Wrote {len(rows)} rows ({sum(r['label'] for r in rows)} desirable) to {args.out}")


if __name__ == "__main__":
    main()
