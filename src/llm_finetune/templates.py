"""Prompt templates: how a canonical record becomes prompt text and response text.

Two styles for now:

* ``alpaca``: the exact prompt of *Build a Large Language Model (From Scratch)*, ch. 7
  (``format_input`` followed by ``"\\n\\n### Response:\\n"``);
* ``tokenizer``: the model's own chat template (``tokenizer.apply_chat_template``).

Training and generation both render through :func:`render_prompt` / :func:`render_example`,
and the chosen template is saved next to the adapter, so inference uses what training used.
"""

from __future__ import annotations

TEMPLATES = ("alpaca", "tokenizer")
ALPACA_HEADER = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
ALPACA_RESPONSE = "\n\n### Response:\n"


def check_template(name: str, tokenizer=None) -> None:
    """Fail early on an unknown template or a tokenizer without a chat template."""
    if name not in TEMPLATES:
        raise ValueError(f"Unknown template {name!r}; choose one of {TEMPLATES}")
    if name == "tokenizer" and tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'tokenizer' needs a tokenizer with a chat template; this one has none")


def alpaca_input(record: dict) -> str:
    """The book's ``format_input``: header, instruction and (when present) input."""
    meta = record.get("meta") or {}
    instruction = meta["instruction"] if "instruction" in meta else _last_user(record)
    user_input = meta.get("input", "")
    text = f"{ALPACA_HEADER}\n\n### Instruction:\n{instruction}"
    return text + (f"\n\n### Input:\n{user_input}" if user_input else "")


def render_prompt(record: dict, template: str, tokenizer=None) -> str:
    """The text the model sees before it answers (ends where the response starts)."""
    check_template(template, tokenizer)
    if template == "alpaca":
        _require_single_turn(record)
        return alpaca_input(record) + ALPACA_RESPONSE
    return tokenizer.apply_chat_template(_chat(record)[:-1], tokenize=False, add_generation_prompt=True)


def render_example(record: dict, template: str, tokenizer=None) -> tuple[str, str]:
    """``(prompt, response)`` texts of a training example; response excludes any EOS."""
    prompt = render_prompt(record, template, tokenizer)
    if template == "alpaca":
        return prompt, record["messages"][-1]["content"]
    full = tokenizer.apply_chat_template(_chat(record), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("The chat template does not render the prompt as a prefix of the full conversation")
    response = full[len(prompt):]
    eos = tokenizer.eos_token or ""
    if eos and eos in response:
        response = response[: response.rindex(eos)]
    return prompt, response


def _chat(record: dict) -> list[dict]:
    messages = [dict(m) for m in record["messages"]]
    if messages[-1]["role"] != "assistant":
        raise ValueError("A training record must end with an assistant message")
    if record.get("system"):
        messages.insert(0, {"role": "system", "content": record["system"]})
    return messages


def _last_user(record: dict) -> str:
    return next(m["content"] for m in reversed(record["messages"]) if m["role"] == "user")


def _require_single_turn(record: dict) -> None:
    if len(record["messages"]) != 2:
        raise ValueError("The alpaca template renders single-turn records only; use template: tokenizer")
