"""The ``tokenize`` parameters as checked settings, the key of the token cache, and the template record.

Every stage that tokenizes (``sft``, ``rm``, ``dpo``) and every preflight reads the parameters
through :func:`settings_from_params`, and every saved model carries :func:`saved_template`, so
training and generation can never disagree on the template.
"""

from __future__ import annotations

from llm_finetune.tokens.conversations import TokenizeSettings
from llm_finetune.tokens.packing import PACKING
from llm_finetune.tokens.templates import check_template, load_template, template_source

FORMAT_VERSION = 1  # bump when the tokenized layout changes, so old caches are not reused
TEMPLATE_FILE = "prompt_template.json"  # saved next to every adapter; generation reads it


def settings_from_params(params: dict, tokenizer=None) -> tuple[TokenizeSettings, dict]:
    """``TokenizeSettings`` and the dict that keys the cache (template text included).

    Raises on an unknown template, ``loss_on``, ``truncation`` or ``packing``, so ``preflight``
    calls it too (without a tokenizer) to fail before anything expensive.
    """
    if params["packing"] not in PACKING:
        raise ValueError(f"tokenize.packing {params['packing']!r} is not one of {PACKING}")
    template = load_template(params["template"], params.get("template_dir"))
    check_template(template, tokenizer)
    settings = TokenizeSettings(template=template, cutoff_len=params["cutoff_len"], loss_on=params["loss_on"],
                                truncation=params["truncation"])
    key = {"format": FORMAT_VERSION, "template": params["template"],
           "template_source": template_source(template, tokenizer),
           "cutoff_len": settings.cutoff_len, "loss_on": settings.loss_on, "truncation": settings.truncation,
           "packing": params["packing"]}
    return settings, key


def saved_template(tokenize_params: dict, tokenizer) -> dict:
    """What travels with the adapter: the template's name and full text, and the tokenize settings."""
    template = load_template(tokenize_params["template"], tokenize_params.get("template_dir"))
    source = template_source(template, tokenizer)
    keys = ("cutoff_len", "loss_on", "truncation", "packing")
    return {"template": tokenize_params["template"], "source": source} | {k: tokenize_params[k] for k in keys}
