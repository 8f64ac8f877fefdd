"""Turn a registry entry into a clean transformers folder, once per source fingerprint.

Conversion of the packaged GGUF takes ~40 s and 1.5 GB of RAM, so finished folders are
kept in a cache keyed by :meth:`ModelSpec.fingerprint`; a later run with the same source
reuses the folder. A folder counts as finished only when ``source.json`` exists: it is
written last, after an atomic rename of the temporary build folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from llm_finetune.models.registry import ModelSpec

logger = logging.getLogger(__name__)

SOURCE_FILE = "source.json"


def materialize(spec: ModelSpec, cache_dir: Path, requested_revision: str | None = None) -> Path:
    """Return a folder holding the model as a transformers checkpoint, building it if needed.

    A Hub entry is pinned to its commit first; ``source.json`` records both the revision the entry
    asked for (``requested_revision`` when ``spec`` comes already pinned) and that commit.
    """
    requested_revision = requested_revision or spec.revision
    spec = spec.pinned()
    fingerprint = spec.fingerprint()
    target = Path(cache_dir) / f"{spec.name}-{fingerprint}"
    if (target / SOURCE_FILE).is_file():
        logger.info("Reusing materialised base model %s (fingerprint %s) at %s", spec.name, fingerprint, target)
        return target
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    started = time.perf_counter()
    logger.info("Materialising base model %s from %s: %s", spec.name, spec.source, spec.locate())
    builders = {"gguf_package": _from_gguf, "hub": _from_hub, "local": _from_local}
    builders[spec.source](spec, building)
    if spec.chat_template:
        _override_chat_template(building, spec.chat_template, spec.trust_remote_code)
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    meta = {"name": spec.name, "source": spec.source, "fingerprint": fingerprint,
            "location": str(spec.locate()), "seconds": round(time.perf_counter() - started, 1),
            "trust_remote_code": spec.trust_remote_code}
    if spec.source == "hub":
        meta |= {"revision": requested_revision or "main", "commit": spec.revision}
    (target / SOURCE_FILE).write_text(json.dumps(meta, indent=2))
    logger.info("Materialised %s in %.1f s", spec.name, meta["seconds"])
    return target


def _from_gguf(spec: ModelSpec, out: Path) -> None:
    """Dequantise a GGUF file and save it as a plain fp32 safetensors checkpoint."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = spec.locate()
    folder, name = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = AutoModelForCausalLM.from_config(config)
    load_every_weight(clean, loaded.state_dict(), str(gguf_path))
    clean.tie_weights()
    del loaded
    clean.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(out)


def load_every_weight(model, state: dict, origin: str) -> None:
    """Load ``state`` into ``model``, refusing to leave any weight at its random initialisation.

    A tensor the conversion did not map would otherwise stay random, silently. Only a weight that
    the model ties to another one (``lm_head`` to the embeddings) may be absent from ``state``.
    """
    result = model.load_state_dict(state, strict=False)
    tied = getattr(model, "_tied_weights_keys", None) or {}
    tied = set(tied) if not isinstance(tied, dict) else set(tied)
    tied_here = tied if getattr(model.config, "tie_word_embeddings", False) else set()
    missing = sorted(set(result.missing_keys) - tied_here)
    if missing or result.unexpected_keys:
        raise ValueError(f"{origin}: converted weights do not match {type(model).__name__}: "
                         f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
                         f"unexpected {sorted(result.unexpected_keys)[:10]}")


def _from_hub(spec: ModelSpec, out: Path) -> None:
    """Download a Hub checkpoint at its pinned commit (needs network or the HF cache) as a local folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    remote = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(spec.repo_id, **remote)
        spec.check_remote_code({"auto_map": getattr(config, "auto_map", None)}, spec.repo_id)
        model = AutoModelForCausalLM.from_pretrained(spec.repo_id, **remote)
        tokenizer = AutoTokenizer.from_pretrained(spec.repo_id, **remote)
    except OSError as err:
        raise OSError(
            f"Could not load {spec.repo_id!r} from the Hugging Face Hub ({err}). Offline? "
            "Use the packaged default (model: smollm2-135m-instruct) or a `local` folder."
        ) from err
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _from_local(spec: ModelSpec, out: Path) -> None:
    """Link (or copy) the files of a local checkpoint folder."""
    link_tree(spec.locate(), out)


def _override_chat_template(folder: Path, template: str, trust_remote_code: bool) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)


# files that are large, written once and never rewritten in place: shared by hard links between the
# user's folder, the cache and every version; everything else (configs, tokenizer files, JSON) is copied
LINKED_SUFFIXES = (".safetensors", ".bin", ".gguf", ".arrow", ".pt", ".pth")


def link_tree(src: Path, dst: Path) -> None:
    """Copy a folder tree: weights and Arrow tables as hard links (no extra disk), other files as copies.

    A hard link is the same file under two names, so a write through one name changes the other:
    ``tokenizer.save_pretrained`` over a linked ``tokenizer_config.json`` rewrote the user's own
    model folder (a ``chat_template`` override of a ``local`` model did). Small files are copied,
    so whatever a later step rewrites is private to its folder; large ones are only ever written
    as new files.
    """
    src, dst = Path(src), Path(dst)
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix not in LINKED_SUFFIXES:
            shutil.copy2(path, target)
            continue
        try:
            target.hardlink_to(path)
        except OSError:
            shutil.copy2(path, target)


def prepare_base_model(model_name: str, model_registry: dict, cache_dir: Path, *after: object) -> tuple[Path, dict]:
    """The ``model`` registry entry as a clean transformers folder and its source record.

    Reuses a cached conversion (``reused`` in the record). ``after``: outputs of nodes that
    must run first (the preflight report), so a bad configuration fails before any conversion.
    """
    entry = ModelSpec.from_registry(model_registry, model_name)
    spec = entry.pinned()  # one Hub lookup: the fingerprint and the conversion use the same commit
    reused = (Path(cache_dir) / f"{spec.name}-{spec.fingerprint()}" / SOURCE_FILE).is_file()
    if spec.trust_remote_code:
        logger.warning("Model %r: trust_remote_code is on: Python files the model ships (config.json auto_map) "
                       "run in this process", spec.name)
    folder = materialize(spec, Path(cache_dir), requested_revision=entry.revision)
    return folder, json.loads((folder / SOURCE_FILE).read_text()) | {"reused": reused}
