"""Nodes of the ``data`` pipeline: resolve -> download -> align (+ mix) -> split -> decontaminate."""

from __future__ import annotations

import logging

from llm_finetune.data.align import align_dataset, alignment_report
from llm_finetune.data.contamination import contamination_summary, find_contaminated_pairs
from llm_finetune.data.mix import check_probabilities, mix_datasets
from llm_finetune.data.registry import resolve_datasets
from llm_finetune.data.sources import load_source
from llm_finetune.data.split import split_records

logger = logging.getLogger(__name__)


def resolve_dataset_plan(data_params: dict, registry: dict) -> list[dict]:
    """Resolve ``data.datasets`` against ``datasets`` (datasets.yml) and ``data.dataset_info``.

    Fails before any data is read on an unknown name, a missing file, an unsupported
    format, mixed record kinds or a bad mix configuration.
    """
    plan = resolve_datasets(data_params["datasets"], registry, data_params.get("dataset_info"),
                            data_params.get("max_rows"))
    mix = data_params.get("mix") or {}
    if mix.get("strategy") == "interleave":
        check_probabilities(mix.get("probabilities"), len(plan))
    logger.info("Datasets: %s", ", ".join(f"{s['name']} ({s['format']}, {s['kind']})" for s in plan))
    return plan


def download_raw_data(dataset_plan: list[dict], cache_dir: str) -> dict:
    """Snapshot every planned dataset (file, URL or Hub) as raw records plus unreadable lines."""
    raw = {}
    for spec in dataset_plan:
        source = spec["source"] | {"max_rows": spec.get("max_rows")}
        raw[spec["name"]] = load_source(source, cache_dir, plain_text=spec["format"] == "text").as_dict()
    return raw


def align_records(raw_datasets: dict, dataset_plan: list[dict], data_params: dict) -> tuple[list, list, dict]:
    """Align each dataset to the canonical schema, quarantine bad rows, then mix (``data.mix``).

    Returns the mixed records, the quarantined rows (dataset, file, row/line, field, reason)
    and the counts per dataset; fails when a dataset loses more than ``data.max_quarantine_share``.
    """
    aligned, quarantined, per_dataset = {}, [], {}
    for spec in dataset_plan:
        raw = raw_datasets[spec["name"]]
        kept, bad = align_dataset(spec["name"], raw, spec | {"undesirable": data_params.get("undesirable", "quarantine")})
        per_dataset[spec["name"]] = alignment_report(spec["name"], len(raw["records"]) + len(raw["unreadable"]),
                                                      kept, bad, data_params["max_quarantine_share"])
        if raw.get("records_in_source") is not None:  # a max_rows cap cut the source: say how much
            per_dataset[spec["name"]] |= {"max_rows": spec["max_rows"], "records_in_source": raw["records_in_source"]}
        aligned[spec["name"]], quarantined = kept, quarantined + bad
    mix = data_params.get("mix") or {}
    records = mix_datasets(aligned, mix.get("strategy", "concat"), mix.get("probabilities"), mix.get("seed", 0),
                           mix.get("stopping", "first_exhausted"))
    used = sum(len(rows) for rows in aligned.values())
    if len(records) != used:
        logger.warning("Mix (%s, %s): %d records from %d aligned rows", mix.get("strategy"),
                       mix.get("stopping", "first_exhausted"), len(records), used)
    totals = {key: sum(r[key] for r in per_dataset.values())
              for key in ("rows_in", "rows_kept", "rows_quarantined", "identical_pairs", "undesirable_rows")}
    report = {"total": totals | {"rows_mixed": len(records), "kind": dataset_plan[0]["kind"]}, "datasets": per_dataset}
    return records, quarantined, report


def split_dataset(aligned_records: list[dict], split_params: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """Split into train / val / test (``data.split``: mode hash | ordered | shuffle, fractions, seed)."""
    train, val, test = split_records(aligned_records, split_params["train_fraction"], split_params["test_fraction"],
                                     split_params["seed"], split_params.get("mode", "hash"))
    logger.info("Split (%s): train %d, val %d, test %d", split_params.get("mode", "hash"), len(train), len(val),
                len(test))
    return train, val, test


def check_contamination(train: list[dict], val: list[dict], test: list[dict],
                        params: dict) -> tuple[list[dict], dict, list[dict]]:
    """Find train rows that duplicate val/test prompts (exact, or TF-IDF cosine >= ``threshold``).

    With ``drop_train_duplicates`` those train rows are removed; otherwise they are reported.
    """
    evaluation = {"val": val, "test": test}
    if not params.get("enabled", True):
        return train, contamination_summary([], len(train), evaluation, set(), 0, params["threshold"]), []
    pairs, involved = find_contaminated_pairs(train, evaluation, params["threshold"])
    kept = [r for i, r in enumerate(train) if i not in involved] if params.get("drop_train_duplicates") else train
    summary = contamination_summary(pairs, len(train), evaluation, involved, len(train) - len(kept),
                                    params["threshold"])
    for pair in pairs:
        source = (val if pair["split"] == "val" else test)[pair["eval_index"]]["meta"]
        pair |= {"eval_dataset": source.get("dataset"), "eval_row": source.get("row"),
                 "train_dataset": train[pair["train_index"]]["meta"].get("dataset"),
                 "train_row": train[pair["train_index"]]["meta"].get("row")}
    message = ("Contamination: %d val and %d test rows match %d train rows (threshold %.2f); %s"
               % (summary["val_rows_contaminated"], summary["test_rows_contaminated"], len(involved),
                  params["threshold"], f"dropped {summary['train_rows_dropped']} train rows" if
                  params.get("drop_train_duplicates") else "kept (set data.contamination.drop_train_duplicates)"))
    (logger.warning if pairs else logger.info)(message)
    return kept, summary, pairs
