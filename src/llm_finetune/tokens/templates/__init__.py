"""Chat templates as data: how a canonical conversation becomes text, in prompt and answer pieces.

Each template is a YAML file in this folder (or in ``tokenize.template_dir``) whose slots are
strings with placeholders ``{content}``, ``{instruction}``, ``{input}``, ``{tools}``, ``{eos}``
and ``{bos}`` (the tokenizer's EOS / BOS text). Slots:

``bos``, ``system`` (+ ``default_system``, ``system_in_first_user``), ``tools`` (appended to
the system text when a record has tool definitions), ``user`` (+ ``user_with_input`` for
alpaca rows that have an input), ``observation``, ``answer_prefix`` (where the model starts
answering: a generation prompt ends here), ``answer`` / ``function_call`` (the answer text),
``answer_suffix`` (closes the answer, trained with it), ``turn_separator``, ``stop`` and
``special_tokens`` (markers that must be single tokens of the tokenizer).

The pseudo-template ``tokenizer`` uses the model's own Jinja chat template; its pieces are
found by rendering each conversation prefix, and a template that does not render prefixes
as prefixes is refused. Rendering returns :class:`Piece` s: ``prompt`` text and ``answer``
text, never searched for afterwards, so loss masks follow from the pieces exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

TEMPLATE_DIR = Path(__file__).parent
TOKENIZER = "tokenizer"
PLACEHOLDER = re.compile(r"\{(content|instruction|input|tools|eos|bos)\}")
ALPACA_HEADER = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.")


class TemplateError(ValueError):
    """A template is unknown, malformed, or cannot render a record."""


@dataclass(frozen=True)
class Piece:
    """A run of rendered text: ``prompt`` (context), ``answer`` (what the model must produce) or
    ``untrained`` (an answer turn kept as context: ``train: false``)."""

    text: str
    kind: str


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    description: str = ""
    bos: str = ""
    system: str | None = None
    default_system: str | None = None
    system_in_first_user: bool = False
    tools: str | None = None
    user: str = "{content}"
    user_with_input: str | None = None
    observation: str | None = None
    answer_prefix: str = ""
    answer: str = "{content}"
    function_call: str | None = None
    answer_suffix: str = "{eos}"
    turn_separator: str = ""
    stop: tuple[str, ...] = ()
    special_tokens: tuple[str, ...] = ()
    source: str = field(default="", compare=False, repr=False)

    @classmethod
    def from_yaml(cls, text: str, name: str) -> "ChatTemplate":
        data = yaml.safe_load(text) or {}
        known = {f.name for f in fields(cls)} - {"name", "source"}
        unknown = set(data) - known
        if unknown:
            raise TemplateError(f"template {name!r}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        for key in ("stop", "special_tokens"):
            data[key] = tuple(data.get(key) or ())
        return cls(name=name, source=text, **data)


def available_templates(template_dir: str | Path | None = None) -> list[str]:
    """Names of every template: the shipped ones, the user's folder, and ``tokenizer``."""
    folders = [TEMPLATE_DIR] + ([Path(template_dir)] if template_dir else [])
    return sorted({p.stem for folder in folders for p in folder.glob("*.yaml")} | {TOKENIZER})


def load_template(name: str, template_dir: str | Path | None = None) -> ChatTemplate | str:
    """A :class:`ChatTemplate` by name (a user folder wins over the shipped files), or ``"tokenizer"``."""
    if name == TOKENIZER:
        return TOKENIZER
    for folder in ([Path(template_dir)] if template_dir else []) + [TEMPLATE_DIR]:
        path = folder / f"{name}.yaml"
        if path.is_file():
            return ChatTemplate.from_yaml(path.read_text(encoding="utf-8"), name)
    raise TemplateError(f"Unknown template {name!r}; choose one of {available_templates(template_dir)}")


def check_template(template: ChatTemplate | str, tokenizer=None) -> None:
    """Fail early: ``tokenizer`` needs a chat template; declared special tokens must be single tokens."""
    if template == TOKENIZER:
        if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
            raise TemplateError("template 'tokenizer' needs a tokenizer with a chat template; this one has none")
        return
    if tokenizer is None:
        return
    missing = [t for t in _expand(template.special_tokens, tokenizer) if len(tokenizer.tokenize(t)) != 1]
    if missing:
        raise TemplateError(f"template {template.name!r} needs special tokens {missing} that this tokenizer does "
                            "not have as single tokens; choose a template that matches the model")


def _expand(texts, tokenizer) -> list[str]:
    specials = _specials(tokenizer)
    return [_fill(text, specials) for text in texts]


def _specials(tokenizer) -> dict:
    """``{eos}`` / ``{bos}`` texts, looked up once per render (a tokenizer attribute lookup is slow)."""
    return {"eos": getattr(tokenizer, "eos_token", None) or "", "bos": getattr(tokenizer, "bos_token", None) or ""}


def _fill(slot: str, values: dict) -> str:
    """Fill placeholders in one pass (content is never re-scanned for placeholders)."""
    if "{" not in slot:
        return slot
    return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), "")), slot)


def render_pieces(record: dict, template: ChatTemplate | str, tokenizer=None) -> list[Piece]:
    """The record as alternating prompt / answer pieces, ending with the last answer.

    ``template`` is a :class:`ChatTemplate`, a shipped template's name, or ``"tokenizer"``.
    """
    if template == TOKENIZER:
        return _tokenizer_pieces(record, tokenizer)
    if isinstance(template, str):
        template = load_template(template)
    messages, specials = record["messages"], _specials(tokenizer)
    system = record.get("system") or template.default_system
    if record.get("tools"):
        if template.tools is None:
            raise TemplateError(f"template {template.name!r} cannot render tool definitions")
        system = (system or "") + _fill(template.tools, specials | {"tools": record["tools"]})
    pieces, prompt = [], _fill(template.bos, specials)
    prefix_first_user = ""
    if system and template.system_in_first_user:
        prefix_first_user = _fill(template.system or "{content}", specials | {"content": system})
    elif system:
        if template.system is None:
            raise TemplateError(f"template {template.name!r} has no system slot; the record has a system prompt")
        prompt += _fill(template.system, specials | {"content": system})
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    for index, message in enumerate(messages):
        role = message["role"]
        if role in ("assistant", "function_call"):
            slot = template.answer if role == "assistant" else template.function_call
            if slot is None:
                raise TemplateError(f"template {template.name!r} cannot render function calls")
            pieces.append(Piece(prompt + _fill(template.answer_prefix, specials), "prompt"))
            text = _fill(slot, specials | {"content": message["content"]})
            pieces.append(Piece(text + _fill(template.answer_suffix, specials), _answer_kind(message)))
            prompt = template.turn_separator if index < len(messages) - 1 else ""
            continue
        if role == "user":
            prompt += _user_text(record, message, template, specials, index == last_user, prefix_first_user)
            prefix_first_user = ""
        elif role == "observation":
            if template.observation is None:
                raise TemplateError(f"template {template.name!r} cannot render tool results (observation)")
            prompt += _fill(template.observation, specials | {"content": message["content"]})
        else:
            raise TemplateError(f"unknown role {role!r}")
    if not pieces or pieces[-1].kind != "answer":
        raise TemplateError("a training record must end with an answer (assistant or function_call)")
    return pieces


def _answer_kind(message: dict) -> str:
    """``answer`` (a training target), or ``untrained`` for a turn marked ``train: false`` (LLaMA-Factory's
    ``loss_weight: 0``): rendered the same, never trained, whatever ``loss_on``."""
    return "answer" if message.get("train", True) else "untrained"


def _user_text(record: dict, message: dict, template: ChatTemplate, specials: dict, is_last_user: bool,
               system_prefix: str) -> str:
    """The user slot; alpaca rows with an input use ``user_with_input`` for the book's exact text."""
    meta = record.get("meta") or {}
    instruction, user_input = meta.get("instruction"), meta.get("input")
    if (template.user_with_input and is_last_user and user_input and instruction
            and message["content"] == f"{instruction}\n\n{user_input}"):
        values = {"instruction": system_prefix + instruction, "input": user_input}
        return _fill(template.user_with_input, specials | values)
    return _fill(template.user, specials | {"content": system_prefix + message["content"]})


def _tokenizer_pieces(record: dict, tokenizer) -> list[Piece]:
    """Pieces from the model's Jinja template: render each prefix, cut the answer out of the next one."""
    check_template(TOKENIZER, tokenizer)
    chat = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    roles = {"user": "user", "assistant": "assistant", "function_call": "assistant", "observation": "tool"}
    pieces, done = [], ""
    for message in record["messages"]:
        if message["role"] in ("assistant", "function_call"):
            prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(chat + [{"role": "assistant", "content": message["content"]}],
                                                 tokenize=False)
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise TemplateError("the tokenizer's chat template does not render a conversation prefix as a "
                                    "prefix of the whole; use a template from the registry")
            pieces += [Piece(prompt[len(done):], "prompt"), Piece(full[len(prompt):], _answer_kind(message))]
            done = full
        chat.append({"role": roles[message["role"]], "content": message["content"]})
    if not pieces:
        raise TemplateError("a training record must end with an answer (assistant or function_call)")
    return pieces


def template_from_saved(saved: dict, tokenizer, requested: str | None = None,
                        template_dir: str | Path | None = None) -> ChatTemplate | str:
    """The template an adapter was trained with (``prompt_template.json``), checked against the run.

    ``requested`` (``generate.template``) must name the same template; for ``tokenizer`` the
    tokenizer's chat template must be the saved one. A mismatch is an error.
    """
    name = saved["template"]
    if requested and requested != name:
        raise TemplateError(f"generate.template is {requested!r} but the adapter was trained with {name!r}; "
                            "generation must use the training template (leave generate.template unset)")
    if name == TOKENIZER:
        if saved.get("source") is not None and getattr(tokenizer, "chat_template", None) != saved["source"]:
            raise TemplateError("the tokenizer's chat template differs from the one the adapter was trained with")
        return TOKENIZER
    if saved.get("source") is None:  # adapters saved before templates travelled as text
        return load_template(name, template_dir)
    return ChatTemplate.from_yaml(saved["source"], name)


def template_source(template: ChatTemplate | str, tokenizer) -> str | None:
    """The full text that defines ``template``: its YAML, or the tokenizer's Jinja chat template."""
    return getattr(tokenizer, "chat_template", None) if template == TOKENIZER else template.source


def stop_strings(template: ChatTemplate | str, tokenizer) -> tuple[str, ...]:
    """The template's stop strings that are not single tokens (those end generation as ids,
    :func:`stop_token_ids`); EOS is left out (generation stops at it anyway)."""
    if template == TOKENIZER:
        return ()
    eos = getattr(tokenizer, "eos_token", None)
    return tuple(s for s in _expand(template.stop, tokenizer)
                 if s and s != eos and _single_token(s, tokenizer) is None)


def stop_token_ids(template: ChatTemplate | str, tokenizer) -> list[int]:
    """Ids that end a generated answer under ``template``: its stop strings that are single tokens, or,
    for ``tokenizer``, the first special token the model's chat template writes after an answer
    (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``). Without them a model whose turn ends with a
    marker other than its EOS generates to ``max_new_tokens``."""
    if template == TOKENIZER:
        return _jinja_end_ids(tokenizer)
    ids = (_single_token(text, tokenizer) for text in _expand(template.stop, tokenizer) if text)
    return list(dict.fromkeys(i for i in ids if i is not None))


def _single_token(text: str, tokenizer) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def _jinja_end_ids(tokenizer) -> list[int]:
    probe = "PROBE"
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}]}
    try:
        answer = _tokenizer_pieces(record, tokenizer)[-1].text
    except TemplateError:
        return []
    suffix = answer[answer.index(probe) + len(probe):] if probe in answer else ""
    special = set(getattr(tokenizer, "all_special_ids", ())) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return next(([i] for i in tokenizer(suffix, add_special_tokens=False)["input_ids"] if i in special), [])


def render_prompt(record: dict, template: ChatTemplate | str, tokenizer=None) -> str:
    """The text the model sees before its last answer (a generation prompt)."""
    return "".join(piece.text for piece in render_pieces(record, template, tokenizer)[:-1])


def render_text(record: dict, template: ChatTemplate | str, tokenizer=None) -> str:
    """The whole rendered conversation."""
    return "".join(piece.text for piece in render_pieces(record, template, tokenizer))


def alpaca_input(record: dict) -> str:
    """The book's ``format_input``: header, instruction and (when present) input."""
    meta = record.get("meta") or {}
    messages = record.get("messages") or record.get("prompt") or []
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    instruction = meta["instruction"] if "instruction" in meta else last_user
    user_input = meta.get("input", "")
    text = f"{ALPACA_HEADER}\n\n### Instruction:\n{instruction}"
    return text + (f"\n\n### Input:\n{user_input}" if user_input else "")
