"""Align raw datasets to the canonical schema, quarantining every row that cannot be used.

Each dataset is aligned by its layout (``format``, ``ranking``, ``columns``, ``tags``; see
:mod:`.formats` and :mod:`.preference`). A quarantined row keeps the dataset, file, row
(and line, for line-oriented files), field, reason and the row itself. Counts in / kept /
quarantined-by-reason are reported per dataset. A dataset stops the run when it is empty,
when a required column is missing from every row, or when its quarantined share exceeds
``max_quarantine_share``.

KTO labels (a ``kto_tag`` column, LLaMA-Factory's unpaired feedback layout) are kept as the record's
``label`` (true: desirable, false: undesirable). Stages that train on conversations as they are (sft)
quarantine the undesirable ones with reason :data:`UNDESIRABLE` (``undesirable: quarantine``, the
default), so a response labelled bad is never trained on as a target; those rows are intended exclusions
and do not count against ``max_quarantine_share``. ``undesirable: keep`` leaves them in, for a stage
that uses the label.
"""

from __future__ import annotations

import logging
from collections import Counter

from llm_finetune.data import formats, preference
from llm_finetune.data.formats import RowDefect

logger = logging.getLogger(__name__)

# (format, ranking) -> aligner; the kind of record it makes follows from ranking / format.
ALIGNERS = {
    ("alpaca", False): formats.align_alpaca,
    ("alpaca", True): preference.align_alpaca_pair,
    ("sharegpt", False): formats.align_sharegpt,
    ("sharegpt", True): preference.align_sharegpt_pair,
    ("openai", False): formats.align_sharegpt,
    ("openai", True): preference.align_sharegpt_pair,
    ("prompt_completion", False): formats.align_prompt_completion,
    ("text", False): formats.align_text,
    ("preference", True): preference.align_trl_pair,
    ("medicalgpt", True): preference.align_medicalgpt_pair,
}
FORMATS = tuple(sorted({layout for layout, _ in ALIGNERS}))
ALWAYS_RANKED = {"preference", "medicalgpt"}
REQUIRED = {
    "alpaca": ("prompt", "response"), "sharegpt": ("messages",), "openai": ("messages",),
    "prompt_completion": ("prompt", "completion"), "text": ("text",), "preference": ("chosen", "rejected"),
    "medicalgpt": ("question", "chosen", "rejected"),
}


UNDESIRABLE = "undesirable answer (KTO label false)"
KTO_TRUE, KTO_FALSE = {True, "true", "True", 1}, {False, "false", "False", 0}


class AlignmentError(ValueError):
    """A dataset as a whole cannot be used."""


def record_kind(layout: str, ranking: bool) -> str:
    """``conversation``, ``preference`` or ``text``: what the layout aligns to."""
    if ranking or layout in ALWAYS_RANKED:
        return "preference"
    return "text" if layout == "text" else "conversation"


def aligner_for(layout: str, ranking: bool):
    ranking = bool(ranking) or layout in ALWAYS_RANKED
    if (layout, ranking) not in ALIGNERS:
        known = ", ".join(f"{f}{' (ranking)' if r else ''}" for f, r in sorted(ALIGNERS))
        raise AlignmentError(f"format {layout!r}{' with ranking' if ranking else ''} is not supported; known: {known}")
    return ALIGNERS[(layout, ranking)]


def required_columns(layout: str, ranking: bool, columns: dict) -> list[str]:
    keys = list(REQUIRED[layout])
    if ranking and layout in ("alpaca", "sharegpt", "openai"):
        keys = [k for k in keys if k != "response"] + ["chosen", "rejected"]
    return [columns[key] for key in keys]


def align_dataset(name: str, raw: dict, spec: dict) -> tuple[list[dict], list[dict]]:
    """Return ``(aligned, quarantined)`` for one raw dataset (``raw``: origin, records, lines, unreadable)."""
    layout, ranking = spec["format"], bool(spec.get("ranking"))
    aligner = aligner_for(layout, ranking)
    columns = formats.columns_for(layout, spec.get("columns"))
    tags = formats.tags_for(layout, spec.get("tags"))
    origin, records, lines, files = raw["origin"], raw["records"], raw.get("lines"), raw.get("files")
    if not records and not raw["unreadable"]:
        raise AlignmentError(f"Dataset {name!r} ({origin}) is empty")
    _check_required_columns(name, origin, records, required_columns(layout, ranking, columns))
    aligned, quarantined = [], []
    for index, row in enumerate(records):
        where = {"dataset": name, "file": files[index] if files else origin, "row": index}
        if lines and lines[index] is not None:
            where["line"] = lines[index]
        if not isinstance(row, dict):
            quarantined.append(where | {"field": None, "reason": "row is not an object",
                                        "detail": f"a JSON {type(row).__name__}", "record": row})
            continue
        try:
            record = aligner(row, columns, tags)
            if "kto_tag" in columns:
                record["label"] = _kto_label(row, columns["kto_tag"])
                if record["label"] is False and spec.get("undesirable", "quarantine") == "quarantine":
                    raise RowDefect(columns["kto_tag"], UNDESIRABLE,
                                    "trained on as a target it would teach the answer labelled bad")
        except RowDefect as defect:
            quarantined.append(where | {"field": defect.field, "reason": defect.reason, "detail": defect.detail,
                                        "record": row})
            continue
        except Exception as err:  # a layout bug must still name the row it failed on
            raise AlignmentError(f"Dataset {name!r}: {_place(where)}: could not align the row "
                                 f"({type(err).__name__}: {err})") from err
        record["meta"] = record["meta"] | {k: v for k, v in where.items() if k in ("dataset", "row", "line")}
        if files:
            record["meta"]["file"] = files[index]
        aligned.append(record)
    quarantined += [{"dataset": name, "file": item.get("file", origin), "row": None, "line": item["line"],
                     "field": None, "reason": item["reason"], "detail": item["detail"], "record": item["text"]}
                    for item in raw["unreadable"]]
    file_order = list(dict.fromkeys([origin] + (files or [])))
    quarantined.sort(key=lambda q: (file_order.index(q["file"]) if q["file"] in file_order else 0,
                                    q.get("line") or 0, q["row"] if q["row"] is not None else -1))
    return aligned, quarantined


def _kto_label(row: dict, column: str) -> bool:
    value = row.get(column)
    if value in KTO_TRUE and not isinstance(value, float):
        return True
    if value in KTO_FALSE and not isinstance(value, float):
        return False
    raise RowDefect(column, "KTO label is not a boolean", f"got {value!r}")


def _place(item: dict) -> str:
    """``file line N`` for line-oriented files, else ``file row N`` (0-based index in the file's list)."""
    if item.get("line"):
        return f"{item['file']} line {item['line']}"
    return f"{item['file']} row {item['row']}"


def _check_required_columns(name: str, origin: str, records: list, required: list[str]) -> None:
    rows = [row for row in records if isinstance(row, dict)]
    for column in required:
        if rows and not any(column in row for row in rows):
            seen = sorted({key for row in rows[:100] for key in row})
            raise AlignmentError(f"Dataset {name!r} ({origin}): required column {column!r} is missing from "
                                 f"every row (columns seen: {seen}); map it with `columns:` in the registry")


def alignment_report(name: str, n_in: int, aligned: list[dict], quarantined: list[dict], max_share: float) -> dict:
    """Counts in / kept / quarantined by reason for one dataset; raise when too much was lost."""
    reasons = dict(Counter(item["reason"] for item in quarantined))
    report = {"rows_in": n_in, "rows_kept": len(aligned), "rows_quarantined": len(quarantined),
              "quarantined_by_reason": reasons,
              "identical_pairs": reasons.get(preference.IDENTICAL_PAIR, 0),
              "undesirable_rows": reasons.get(UNDESIRABLE, 0)}
    logger.info("Align %s: %d in, %d kept, %d quarantined %s", name, n_in, len(aligned), len(quarantined), reasons)
    if n_in != len(aligned) + len(quarantined):
        raise AssertionError(f"Align {name}: {n_in} rows in but {len(aligned)} + {len(quarantined)} accounted for")
    if not aligned:
        raise AlignmentError(f"Dataset {name!r}: no usable rows, all {n_in} were quarantined: {reasons}"
                             + _first_defect(quarantined))
    share = sum(item["reason"] != UNDESIRABLE for item in quarantined) / n_in  # labelled exclusions are intended
    if share > max_share:
        raise AlignmentError(f"Dataset {name!r}: {share:.1%} of rows were quarantined, above "
                             f"data.max_quarantine_share={max_share:.1%}: {reasons}" + _first_defect(quarantined))
    return report


def _first_defect(quarantined: list[dict]) -> str:
    item = next((q for q in quarantined if q["reason"] != UNDESIRABLE), quarantined[0])
    field = f", field {item['field']!r}" if item.get("field") else ""
    return (f". First: {_place(item)}{field}: {item['reason']}"
            + (f" ({item['detail']})" if item.get("detail") else ""))
