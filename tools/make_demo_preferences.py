"""Generate the demo preference pairs: the offline default of the ``rm`` and ``dpo`` stages.

Writes ``data/01_raw/demo_preferences.json``: one alpaca ranking row per row of
``data/01_raw/demo_instructions.json``, ``{"instruction", "input", "chosen", "rejected", "family",
"rejected_kind"}``. The chosen answer is the row's own (computed in code, so correct); the rejected
answer is, deterministically per row (``random.Random(seed)``):

* ``wrong_answer`` (most rows): the answer of another row of the same task family, so it has the
  right form and the wrong content (another sum, another capital, another paraphrase);
* ``unhelpful``: a reply that declines or dodges the task, from a short list written here.

No pair has chosen == rejected (such a pair carries no preference and is quarantined by ``align``).
Nothing is copied from an existing dataset. Run from the project root::

    python tools/make_demo_preferences.py [--out PATH] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "data" / "01_raw" / "demo_instructions.json"
DEFAULT_OUT = ROOT / "data" / "01_raw" / "demo_preferences.json"
DEFAULT_SEED = 4321
UNHELPFUL_SHARE = 0.2
UNHELPFUL = (
    "I'm not able to help with that.",
    "That is a question you could look up yourself.",
    "It depends on many things, so there is no single answer.",
    "Sorry, I would rather not answer this one.",
    "Please ask something else.",
    "I don't know.",
)


def make_pairs(rows: list[dict], seed: int = DEFAULT_SEED) -> list[dict]:
    """One preference pair per row (see the module docstring), in the rows' order."""
    draw = random.Random(seed)
    by_family: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_family[row["family"]].append(row["output"])
    pairs = []
    for row in rows:
        others = [answer for answer in by_family[row["family"]] if answer.strip() != row["output"].strip()]
        if others and draw.random() >= UNHELPFUL_SHARE:
            kind, rejected = "wrong_answer", draw.choice(others)
        else:
            kind, rejected = "unhelpful", draw.choice(UNHELPFUL)
        pairs.append({"instruction": row["instruction"], "input": row["input"], "chosen": row["output"],
                      "rejected": rejected, "family": row["family"], "rejected_kind": kind})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    pairs = make_pairs(json.loads(SOURCE.read_text(encoding="utf-8")), args.seed)
    args.out.write_text(json.dumps(pairs, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(pairs)} pairs to {args.out}")


if __name__ == "__main__":
    main()
