"""Show which tokens are trained: an HTML page of samples and a length histogram.

Each token is a box: trained tokens (label != -100) on green, context tokens grey, and a
red bar between packed samples. Newlines show as ``↵`` and the page is self-contained, so
kedro-viz (``HTMLPreview``) and MLflow (an ``.html`` artifact) both display it.
"""

from __future__ import annotations

import html

from llm_finetune.tokens.conversations import IGNORE_INDEX

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.sample{border:1px solid #ccc;border-radius:6px;padding:.6em;margin:0 0 1em;line-height:1.9}
.t{font-family:ui-monospace,monospace;white-space:pre-wrap;border-right:1px solid #fff;padding:1px 0}
.y{background:#b7f0c0}.n{background:#eee;color:#888}.cut{border-left:3px solid #d33;margin-left:2px}
h1{font-size:1.2em}.meta{font-size:.85em;color:#555;margin-bottom:.3em}
"""


def samples_of(row: dict) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` of each sample in a (possibly packed) training row."""
    lengths = row.get("sample_lengths") or [len(row["input_ids"])]
    samples, start = [], 0
    for length in lengths:
        samples.append((row["input_ids"][start:start + length], row["labels"][start:start + length]))
        start += length
    return samples


def mask_preview_html(rows: list[dict], tokenizer, title: str, n_rows: int = 8) -> str:
    """A self-contained HTML page of the first ``n_rows`` training rows with trained tokens highlighted."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
             "<p><span class='t y'>trained</span> <span class='t n'>not trained (label -100)</span> "
             "<span class='t cut'>&nbsp;</span> start of a packed sample</p>"]
    for number, row in enumerate(rows[:n_rows]):
        samples = samples_of(row)
        trained = sum(label != IGNORE_INDEX for label in row["labels"])
        parts.append(f"<div class='sample'><div class='meta'>row {number}: {len(row['input_ids'])} tokens, "
                     f"{trained} trained, {len(samples)} sample(s)</div>")
        for index, (ids, labels) in enumerate(samples):
            for position, (token, label) in enumerate(zip(ids, labels)):
                classes = "t " + ("y" if label != IGNORE_INDEX else "n") + (" cut" if index and not position else "")
                text = tokenizer.decode([token]).replace("\n", "↵\n")
                parts.append(f"<span class='{classes}' title='{token}'>{html.escape(text)}</span>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


def length_histogram(lengths: list[int], cutoff_len: int, title: str):
    """Sample lengths in tokens, with the cutoff marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.hist(lengths, bins=min(50, max(5, len(set(lengths)))), color="#4c78a8")
    axis.axvline(cutoff_len, color="#d33", linestyle="--", label=f"cutoff_len {cutoff_len}")
    axis.set_xlabel("tokens per sample")
    axis.set_ylabel("samples")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    return figure
