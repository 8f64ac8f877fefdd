"""Report artifacts: loss curve, score histograms, per-family and best/worst tables, summary.

Every function takes judged rows (a response row plus its scores: ``exact_match``,
``rouge_*``, ``bleu_4`` and, when those judges ran, ``llm_score`` / ``local_score``) and
returns plain data, a DataFrame or a matplotlib figure, which the catalog persists.
"""

from __future__ import annotations

import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

SCORE_JUDGES = ("llm", "local")
COUNT_SUFFIXES = ("_n", "total", "scored", "failed", "unparsable")


def loss_curve(history: list[dict]):
    """Train and validation loss against the optimiser step."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("val", "o-")):
        points = [(row["step"], row["loss"]) for row in history if row["split"] == split]
        if points:
            steps, losses = zip(*points)
            axis.plot(steps, losses, style, label=f"{split} loss")
    axis.set(xlabel="step", ylabel="loss", title="LoRA fine-tuning loss")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def reward_curves(history: list[dict]):
    """GRPO's training signals against the optimiser step: the weighted reward (± its spread within a group) and
    each reward function's mean (train lines, val points), the KL to the start model, completion length and
    the clipped share of tokens."""
    train = [row for row in history if row["split"] == "train"]
    val = [row for row in history if row["split"] == "val"]
    names = sorted({key for row in history for key in row if key.startswith("rewards/")})
    figure, axes = plt.subplots(2, 2, figsize=(11, 7))
    rewards, kl, length, clip = axes.flatten()
    for number, key in enumerate(["reward", *names]):
        colour = f"C{number}"
        points = [(row["step"], row[key]) for row in train if row.get(key) is not None]
        if points:
            steps, values = zip(*points)
            rewards.plot(steps, values, "-", color=colour, label=f"{key} (train)")
            if key == "reward":
                spread = [row.get("reward_std") or 0.0 for row in train if row.get(key) is not None]
                rewards.fill_between(steps, [v - s for v, s in zip(values, spread)],
                                     [v + s for v, s in zip(values, spread)], color=colour, alpha=0.15)
        points = [(row["step"], row[key]) for row in val if row.get(key) is not None]
        if points:
            rewards.plot(*zip(*points), "o", color=colour, label=f"{key} (val)")
    rewards.set(xlabel="step", ylabel="reward", title="rewards (band: std within a group)")
    rewards.legend(fontsize="small")
    for axis, key, title in ((kl, "kl", "KL to the start model"), (length, "completion_length", "completion tokens"),
                             (clip, "clip_ratio", "clipped share of tokens")):
        for split, rows, style in (("train", train, "-"), ("val", val, "o")):
            points = [(row["step"], row[key]) for row in rows if row.get(key) is not None]
            if points:
                axis.plot(*zip(*points), style, label=split)
        axis.set(xlabel="step", title=title)
        if axis.lines:
            axis.legend(fontsize="small")
    for axis in axes.flatten():
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def ranking_key(rows: list[dict]) -> str:
    """The score that ranks responses: a judge's 0-100 score when it scored any row, else ROUGE-L."""
    for judge in SCORE_JUDGES:
        if any(row.get(f"{judge}_score") is not None for row in rows):
            return f"{judge}_score"
    return "rouge_l"


def _score(row: dict, key: str) -> float | None:
    value = row.get(key)
    return None if value is None else (round(100 * value, 1) if key == "rouge_l" else value)


def score_histogram(runs: dict[str, list[dict]]):
    """Histogram of each judge's 0-100 scores (ROUGE-L x 100 without a score judge), one colour per model."""
    judges = [j for j in SCORE_JUDGES if any(f"{j}_score" in row for rows in runs.values() for row in rows)]
    panels = judges or ["rouge_l"]
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axis, judge in zip(axes[0], panels):
        key = f"{judge}_score" if judges else "rouge_l"
        for label, rows in runs.items():
            values = [row[key] * (1 if judges else 100) for row in rows if row.get(key) is not None]
            axis.hist(values, bins=range(0, 105, 5), alpha=0.55, label=f"{label} (n={len(values)})")
        axis.set(xlabel=f"{judge} score (0-100)" if judges else "ROUGE-L x 100", ylabel="responses",
                 title=f"{judge} judge" if judges else "ROUGE-L")
        axis.legend()
    figure.tight_layout()
    return figure


def score_stats(rows: list[dict]) -> dict:
    """Mean, median, spread and deciles of each score judge's scores (scored rows only)."""
    stats = {}
    for judge in SCORE_JUDGES:
        values = [row[f"{judge}_score"] for row in rows if row.get(f"{judge}_score") is not None]
        if f"{judge}_score" in (rows[0] if rows else {}):
            stats[judge] = {"n_scored": len(values), "n_total": len(rows),
                            "mean": statistics.fmean(values) if values else None,
                            "median": statistics.median(values) if values else None,
                            "stdev": statistics.pstdev(values) if values else None,
                            "histogram_0_100_by_10": [sum(lo <= v < lo + 10 or (lo == 90 and v == 100) for v in values)
                                                      for lo in range(0, 100, 10)]}
    return stats


def family_table(runs: dict[str, list[dict]]) -> pd.DataFrame:
    """Exact match per task family for each model (verifiable rows only), with deltas."""
    frames = []
    for label, rows in runs.items():
        scored = pd.DataFrame([{"family": r.get("family") or "unknown", "exact_match": float(r["exact_match"])}
                               for r in rows if r.get("exact_match") is not None])
        if scored.empty:
            continue
        grouped = scored.groupby("family")["exact_match"].agg(["count", "mean"])
        frames.append(grouped.rename(columns={"count": f"{label}_n", "mean": f"{label}_exact_match"}))
    if not frames:
        return pd.DataFrame(columns=["family"])
    table = pd.concat(frames, axis=1).reset_index()
    labels = list(runs)
    if len(labels) == 2 and all(f"{label}_exact_match" in table for label in labels):
        table["delta"] = table[f"{labels[1]}_exact_match"] - table[f"{labels[0]}_exact_match"]
    return table.round(4)


def examples_table(base: list[dict] | None, tuned: list[dict], n: int) -> pd.DataFrame:
    """The ``n`` worst and ``n`` best responses of ``tuned`` (0-100 scale), the base response beside each."""
    key = ranking_key(tuned)
    scored = sorted((i for i in range(len(tuned)) if _score(tuned[i], key) is not None),
                    key=lambda i: _score(tuned[i], key))
    picks = [("worst", i) for i in scored[:n]] + [("best", i) for i in reversed(scored[-n:])]
    columns = ["rank", "score_name", "score", "instruction", "input", "reference", "response"]
    columns += ["base_response", "base_score"] if base is not None else []
    rows = []
    for kind, index in picks:
        row = tuned[index]
        entry = {"rank": kind, "score_name": key, "score": _score(row, key), "instruction": row["instruction"],
                 "input": row.get("input", ""), "reference": row["output"], "response": row["model_response"]}
        if base is not None:
            entry |= {"base_response": base[index]["model_response"], "base_score": _score(base[index], key)}
        rows.append(entry)
    return pd.DataFrame(rows, columns=columns)


def comparison_table(base: list[dict], tuned: list[dict]) -> pd.DataFrame:
    """One row per test example: reference, both responses and their scores."""
    rows = []
    for before, after in zip(base, tuned, strict=True):
        row = {"instruction": before["instruction"], "input": before["input"], "reference": before["output"],
               "family": before.get("family"), "base_response": before["model_response"],
               "tuned_response": after["model_response"]}
        for key in ("exact_match", "rouge_l", "bleu_4", "llm_score", "local_score"):
            if key in before:
                row[f"base_{key}"], row[f"tuned_{key}"] = before[key], after[key]
        rows.append(row)
    return pd.DataFrame(rows)


def summary(base: dict, tuned: dict, train_info: dict) -> dict:
    """Base and tuned metrics side by side with their deltas."""
    delta = {key: round(tuned[key] - base[key], 4) for key in base
             if isinstance(base[key], (int, float)) and isinstance(tuned.get(key), (int, float))
             and not key.endswith(COUNT_SUFFIXES) and key != "n"}
    training = {k: v for k, v in train_info.items() if isinstance(v, (int, float, str))}
    return {"base": base, "tuned": tuned, "delta": delta, "train": training}


def markdown_report(summary_metrics: dict, families: pd.DataFrame, examples: pd.DataFrame) -> str:
    """A human-readable report: headline metrics, per-family exact match, worst and best responses."""
    labels = [key for key in ("base", "tuned", "responses") if key in summary_metrics]
    metrics = ["exact_match", "exact_match_n", "rouge_1", "rouge_2", "rouge_l", "bleu_4", "llm_score_mean",
               "llm_scored", "llm_total", "local_score_mean", "local_scored", "local_total"]
    lines = ["# Evaluation report", "", "| metric | " + " | ".join(labels) + (" | delta |" if "delta" in summary_metrics else " |"),
             "|---|" + "---|" * (len(labels) + ("delta" in summary_metrics))]
    for metric in metrics:
        if any(metric in summary_metrics[label] for label in labels):
            cells = [_fmt(summary_metrics[label].get(metric)) for label in labels]
            if "delta" in summary_metrics:
                cells.append(_fmt(summary_metrics["delta"].get(metric)))
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    cells = examples.map(_one_line)
    lines += ["", "## Exact match by task family", "",
              families.to_markdown(index=False) if not families.empty else "(no verifiable rows)",
              "", "## Worst and best responses", "", cells.to_markdown(index=False) if not cells.empty else "(none)"]
    return "\n".join(lines) + "\n"


def _one_line(value, limit: int = 300):
    """A table cell on one line: newlines become ``<br>``, long text is cut with an ellipsis."""
    if not isinstance(value, str):
        return value
    text = value if len(value) <= limit else value[:limit] + "..."
    return text.replace("|", "\\|").replace("\n", "<br>")


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)
