"""The model card: what a tuned model is, written from what the run recorded (not from memory).

A card is Markdown with a YAML front matter (the Hugging Face model-card layout, so the Hub and
MLflow show it): the base model with its source and fingerprint and its licence, the data sets with
their source digests and row counts (kept, quarantined, train / val), the catalog version of the
run, the template, the method and every training setting, base -> tuned metrics, and the judges.
It is written by the stage that trained the model, from that run's own datasets, and copied into
every export of that adapter; an export of another adapter gets a card saying so.

Hand-written rather than ``huggingface_hub.ModelCard``: that class renders a Jinja template with
Hub-specific fields, and most of ours (catalog versions, quarantine counts, judges) have no slot.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ADAPTER_MARK = re.compile(r"<!-- adapter: (.+?) -->")
METRICS = ("exact_match", "rouge_1", "rouge_2", "rouge_l", "bleu_4", "llm_score_mean", "local_score_mean",
           "reward_mean", "reward_accuracy", "margin_mean")


def base_licence(base_model_info: dict, registry_entry: dict | None, base_folder: Path | None = None) -> str:
    """The registry entry's ``license``, else the ``license:`` of the base folder's own card, else unknown."""
    if registry_entry and registry_entry.get("license"):
        return str(registry_entry["license"])
    readme = Path(base_folder) / "README.md" if base_folder else None
    if readme is not None and readme.is_file():
        found = re.search(r"^license:\s*(\S+)", readme.read_text(encoding="utf-8", errors="replace"), re.M)
        if found:
            return found.group(1)
    return "unknown: check the base model's own card before you share this model"


def _metrics_table(summary: dict | None) -> list[str]:
    if not summary or "base" not in summary or "tuned" not in summary:
        return ["(no base -> tuned evaluation recorded for this run)"]
    lines = ["| metric | base | tuned | delta |", "|---|---:|---:|---:|"]
    for key in METRICS:
        if key in summary["base"] or key in summary["tuned"]:
            cells = [summary["base"].get(key), summary["tuned"].get(key), summary.get("delta", {}).get(key)]
            lines.append(f"| {key} | " + " | ".join("-" if v is None else f"{v:.4g}" for v in cells) + " |")
    count = summary["tuned"].get("n")
    return lines + (["", f"On {count} held-out test rows."] if count else [])


def model_card(adapter: Path, base_model_info: dict, dataset_plan: list[dict], align_report: dict,
               train_info: dict, summary_metrics: dict | None, judge_params: dict, licence: str,
               stage: str) -> str:
    """The card of the adapter at ``adapter`` (a ``<stage>.adapter`` version folder) from its run's records."""
    from llm_finetune.experiments.record import source_digests

    adapter = Path(adapter)
    version = adapter.parent.name
    template = json.loads((adapter / "prompt_template.json").read_text()) if (adapter / "prompt_template.json"
                                                                             ).is_file() else {}
    settings = json.loads((adapter / "training_params.json").read_text()) if (adapter / "training_params.json"
                                                                             ).is_file() else {}
    digests = source_digests(dataset_plan)
    per_dataset = (align_report or {}).get("datasets", {})
    front = {"license": licence.split(":")[0] if licence.startswith("unknown") else licence,
             "base_model": base_model_info.get("name"), "library_name": "peft", "tags": ["llm-finetune", stage],
             "pipeline_tag": "text-generation"}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", f"<!-- adapter: {version} -->", "",
             f"# {base_model_info.get('name')} tuned with `{stage}` ({train_info.get('method', 'lora')})", "",
             f"Catalog version **{version}** (`data/06_models/{stage}/adapter/{version}`): every dataset this run "
             "wrote carries the same version, so `kedro run --load-versions` reads this run's data back.", "",
             "## Base model", "",
             f"- name: `{base_model_info.get('name')}` (source `{base_model_info.get('source')}`, "
             f"`{base_model_info.get('location', '')}`)",
             f"- fingerprint: `{base_model_info.get('fingerprint')}`",
             f"- licence: {licence}", "", "## Data", "",
             "| dataset | source | sha256 | rows in | kept | quarantined |", "|---|---|---|---:|---:|---:|"]
    for entry in dataset_plan:
        name, counts = entry["name"], per_dataset.get(entry["name"], {})
        digest = (digests.get(name) or {}).get("sha256") or "-"
        lines.append(f"| {name} | `{(digests.get(name) or {}).get('origin', '-')}` | `{str(digest)[:16]}` | "
                     f"{counts.get('rows_in', '-')} | {counts.get('rows_kept', '-')} | "
                     f"{counts.get('rows_quarantined', '-')} |")
    lines += ["", f"Trained on {train_info.get('train_rows', '-')} rows, validated on "
              f"{train_info.get('val_rows', '-')} "
              f"({train_info.get('global_steps', '-')} optimizer steps).", "",
              "## Template", "", f"`{template.get('template', '?')}`: prompts must be rendered in it (the exported "
              "tokenizer's chat template, the GGUF's and the Ollama Modelfile's are this template).", "",
              "```yaml", str(template.get("source") or "").strip() or "(the tokenizer's own chat template)", "```", "",
              "## Method and hyperparameters", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{json.dumps(value, default=str)}` |" for key, value in sorted(settings.items())]
    lines += ["", f"Final train loss {train_info.get('final_train_loss', '-')}, val loss "
              f"{train_info.get('final_val_loss', '-')}; precision {train_info.get('precision', '-')}.", "",
              "## Evaluation (base -> tuned)", "", *_metrics_table(summary_metrics), "", "## Judges", "",
              "```json", json.dumps(judge_params or {}, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def card_for_export(card: str | None, adapter: Path, export_lines: list[str]) -> str:
    """The adapter's card with an ``Export`` section; a card of another adapter version is not reused."""
    version = Path(adapter).parent.name
    found = ADAPTER_MARK.search(card or "")
    if not found or found.group(1) != version:
        card = (f"<!-- adapter: {version} -->\n# Export of adapter {version}\n\nThe newest model card describes "
                f"adapter {found.group(1) if found else '(none)'}, not this one: rerun the training stage or export "
                "with `--load-versions` so card and adapter come from the same run.\n")
    return card.rstrip("\n") + "\n\n## Export\n\n" + "\n".join(export_lines) + "\n"
