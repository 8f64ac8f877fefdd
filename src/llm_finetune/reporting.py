"""Report artifacts: the loss curve, the base-vs-tuned table and the summary metrics."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def loss_curve(history: list[dict]):
    """Train and validation loss against the optimiser step."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("val", "o-")):
        points = [(row["step"], row["loss"]) for row in history if row["split"] == split]
        if points:
            steps, losses = zip(*points)
            axis.plot(steps, losses, style, label=f"{split} loss")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title("LoRA fine-tuning loss")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def comparison_table(base: list[dict], tuned: list[dict]) -> pd.DataFrame:
    """One row per test example: reference, both responses and their scores."""
    rows = []
    for before, after in zip(base, tuned, strict=True):
        rows.append({
            "instruction": before["instruction"], "input": before["input"], "reference": before["output"],
            "family": before.get("family"), "base_response": before["model_response"],
            "tuned_response": after["model_response"], "base_exact_match": before["exact_match"],
            "tuned_exact_match": after["exact_match"], "base_rouge_l": round(before["rouge_l"], 4),
            "tuned_rouge_l": round(after["rouge_l"], 4), "base_llm_score": before.get("llm_score"),
            "tuned_llm_score": after.get("llm_score"),
        })
    return pd.DataFrame(rows)


def summary(base: dict, tuned: dict, train_info: dict) -> dict:
    """Base and tuned metrics side by side with their deltas."""
    delta = {key: round(tuned[key] - base[key], 4) for key in base
             if isinstance(base[key], (int, float)) and isinstance(tuned.get(key), (int, float))
             and not key.endswith(("_n", "total", "scored", "failed", "unparsable")) and key != "n"}
    training = {k: v for k, v in train_info.items() if isinstance(v, (int, float, str))}
    return {"base": base, "tuned": tuned, "delta": delta, "train": training}
