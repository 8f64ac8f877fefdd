"""Align raw records to the canonical conversation schema, quarantining unusable rows.

Canonical record (see DESIGN.md)::

    {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}],
     "system": str | None, "tools": str | None, "meta": {...}}

For alpaca rows the user turn is the instruction, followed by the input after a blank
line when there is one; ``meta`` keeps ``instruction`` and ``input`` verbatim (so the
book's Alpaca prompt can be rendered exactly) plus every extra column of the row.
"""

from __future__ import annotations

import logging
from collections import Counter

logger = logging.getLogger(__name__)

ALPACA_FIELDS = ("instruction", "input", "output", "system")


class AlignmentError(ValueError):
    """The input as a whole cannot be used."""


def align_alpaca(records: list[dict], columns: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Return ``(aligned, quarantined)`` for alpaca-layout records.

    Args:
        records: raw rows.
        columns: optional mapping from alpaca field name to the column holding it.
    """
    columns = {field: field for field in ALPACA_FIELDS} | dict(columns or {})
    for required in ("instruction", "output"):
        if records and not any(columns[required] in row for row in records):
            raise AlignmentError(f"Required column {columns[required]!r} ({required}) is missing from every row")
    aligned, quarantined = [], []
    for index, row in enumerate(records):
        reason = _alpaca_defect(row, columns)
        if reason:
            quarantined.append({"row": index, "reason": reason, "record": row})
            continue
        aligned.append(_alpaca_to_canonical(index, row, columns))
    return aligned, quarantined


def _alpaca_defect(row: dict, columns: dict) -> str | None:
    for field in ("instruction", "output"):
        value = row.get(columns[field])
        if not isinstance(value, str):
            return f"field {columns[field]!r} is {type(value).__name__}, expected a string"
        if not value.strip():
            return f"field {columns[field]!r} is empty"
    for field in ("input", "system"):
        value = row.get(columns[field])
        if value is not None and not isinstance(value, str):
            return f"field {columns[field]!r} is {type(value).__name__}, expected a string"
    return None


def _alpaca_to_canonical(index: int, row: dict, columns: dict) -> dict:
    instruction = row[columns["instruction"]]
    user_input = row.get(columns["input"]) or ""
    user = f"{instruction}\n\n{user_input}" if user_input else instruction
    extras = {k: v for k, v in row.items() if k not in set(columns.values())}
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row[columns["output"]]}],
        "system": row.get(columns["system"]) or None,
        "tools": None,
        "meta": {"row": index, "instruction": instruction, "input": user_input, **extras},
    }


def alignment_report(n_in: int, aligned: list[dict], quarantined: list[dict], max_share: float) -> dict:
    """Count rows in / kept / quarantined by reason; raise when too much was lost."""
    reasons = Counter(item["reason"] for item in quarantined)
    report = {"rows_in": n_in, "rows_kept": len(aligned), "rows_quarantined": len(quarantined),
              "quarantined_by_reason": dict(reasons)}
    logger.info("Align: %d in, %d kept, %d quarantined %s", n_in, len(aligned), len(quarantined), dict(reasons))
    if not aligned:
        raise AlignmentError(f"No usable rows: all {n_in} rows were quarantined ({dict(reasons)})")
    share = len(quarantined) / max(n_in, 1)
    if share > max_share:
        raise AlignmentError(
            f"{share:.1%} of rows were quarantined, above data.max_quarantine_share={max_share:.1%}: {dict(reasons)}"
        )
    return report
