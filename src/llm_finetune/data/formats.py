"""Row aligners: one function per source layout, each turning a raw row into a canonical record.

Canonical records (DESIGN.md)::

    conversation  {"messages": [{"role", "content"}...], "system": str|None, "tools": str|None, "meta": {...}}
    preference    {"prompt": [...messages], "chosen": msg, "rejected": msg, "system", "tools", "meta"}
    text          {"text": str, "meta": {...}}

Roles are ``user``, ``assistant``, ``function_call`` (the assistant calling a tool; its
content is the call as JSON text) and ``observation`` (the tool's answer), as in
LLaMA-Factory. An aligner raises :class:`RowDefect` naming the field and the reason; the
align step quarantines the row. Preference layouts live in :mod:`.preference`.
"""

from __future__ import annotations

import json

USER, ASSISTANT, FUNCTION_CALL, OBSERVATION = "user", "assistant", "function_call", "observation"
PROMPT_ROLES = (USER, OBSERVATION)
ANSWER_ROLES = (ASSISTANT, FUNCTION_CALL)

# Column defaults per layout; LLaMA-Factory's names, plus our alpaca aliases.
DEFAULT_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
               "history": "history", "chosen": "chosen", "rejected": "rejected"},
    "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools",
                 "chosen": "chosen", "rejected": "rejected"},
    "openai": {"messages": "messages", "tools": "tools", "chosen": "chosen", "rejected": "rejected"},
    "prompt_completion": {"prompt": "prompt", "completion": "completion", "system": "system"},
    "text": {"text": "text"},
    "preference": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "system": "system"},
    "medicalgpt": {"system": "system", "history": "history", "question": "question",
                   "chosen": "response_chosen", "rejected": "response_rejected"},
}
COLUMN_ALIASES = {"instruction": "prompt", "input": "query", "output": "response", "conversations": "messages"}
DEFAULT_TAGS = {
    "sharegpt": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"},
    "openai": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"},
}


class RowDefect(ValueError):
    """A row that cannot be used: ``field`` names where, ``reason`` is the countable category."""

    def __init__(self, field: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{field}: {reason}" + (f" ({detail})" if detail else ""))
        self.field, self.reason, self.detail = field, reason, detail


def columns_for(layout: str, overrides: dict | None) -> dict:
    """The layout's default column names updated with the user's mapping (aliases accepted)."""
    columns = dict(DEFAULT_COLUMNS.get(layout, {}))
    for key, column in (overrides or {}).items():
        columns[COLUMN_ALIASES.get(key, key)] = column
    return columns


def tags_for(layout: str, overrides: dict | None) -> dict:
    """Turn keys and role names: sharegpt's by default, OpenAI's for OpenAI-style layouts."""
    openai_style = layout in ("openai", "prompt_completion", "preference")
    return DEFAULT_TAGS["openai" if openai_style else "sharegpt"] | dict(overrides or {})


def text_field(row: dict, column: str, required: bool = True, empty: str = "empty field") -> str | None:
    """The string in ``row[column]``; a missing / non-string / blank required value is a defect."""
    value = row.get(column)
    if value is None:
        if required:
            raise RowDefect(column, "missing field")
        return None
    if not isinstance(value, str):
        raise RowDefect(column, "not a string", f"got {type(value).__name__}")
    if required and not value.strip():
        raise RowDefect(column, empty)
    return value


def tools_field(row: dict, column: str | None) -> str | None:
    """Tool definitions as JSON text (``None`` when absent); unparsable JSON is a defect."""
    value = row.get(column) if column else None
    if value in (None, "", []):
        return None
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if not isinstance(value, str):
        raise RowDefect(column, "not a string", f"got {type(value).__name__}")
    try:
        json.loads(value)
    except json.JSONDecodeError as err:
        raise RowDefect(column, "tools are not valid JSON", err.msg) from err
    return value


def check_conversation(messages: list[dict], field: str, final_answer: bool = True, offset: int = 0) -> list[dict]:
    """Validate turn order: user/observation, then assistant/function_call, alternating.

    An observation must answer a function call; with ``final_answer`` the last turn must
    be an answer (something to train on). Every content must be a non-blank string.
    ``offset`` is added to positions in messages (a leading system turn was set apart).
    """
    if not messages:
        raise RowDefect(field, "empty conversation")
    for position, message in enumerate(messages):
        where = f"{field}[{position + offset}]"
        if not isinstance(message.get("content"), str):
            raise RowDefect(where, "content is not a string", f"got {type(message.get('content')).__name__}")
        if not message["content"].strip():
            reason = "empty response" if message["role"] in ANSWER_ROLES else "empty turn"
            raise RowDefect(where, reason)
        expected = PROMPT_ROLES if position % 2 == 0 else ANSWER_ROLES
        if message["role"] not in expected:
            detail = (f"two {_side(message['role'])} turns in a row" if position
                      else f"the conversation starts with {message['role']!r}")
            raise RowDefect(where, "broken role order", detail)
        if message["role"] == OBSERVATION and (not position or messages[position - 1]["role"] != FUNCTION_CALL):
            raise RowDefect(where, "observation without a function call")
    if final_answer and messages[-1]["role"] not in ANSWER_ROLES:
        raise RowDefect(f"{field}[{len(messages) - 1 + offset}]", "last turn is not an answer",
                        f"ends with {messages[-1]['role']!r}")
    return messages


def _side(role: str) -> str:
    return "user" if role in PROMPT_ROLES else "assistant"


def map_turns(turns: object, field: str, tags: dict) -> tuple[list[dict], str | None, int]:
    """sharegpt / OpenAI turns -> ``(messages, system, offset)``.

    A leading system turn is returned apart; ``offset`` (1 when there was one) maps message
    positions back to turn positions for messages that name the field.
    """
    if not isinstance(turns, list):
        raise RowDefect(field, "not a list of turns", f"got {type(turns).__name__}")
    roles = {tags["user_tag"]: USER, tags["assistant_tag"]: ASSISTANT, tags["observation_tag"]: OBSERVATION,
             tags["function_tag"]: FUNCTION_CALL}
    system, messages = None, []
    for position, turn in enumerate(turns):
        where = f"{field}[{position}]"
        if not isinstance(turn, dict):
            raise RowDefect(where, "turn is not an object", f"got {type(turn).__name__}")
        tag = turn.get(tags["role_tag"])
        if tag == tags["system_tag"] and position == 0:
            system = text_field(turn, tags["content_tag"], required=False)
            continue
        if not isinstance(tag, str) or tag not in roles:
            raise RowDefect(f"{where}.{tags['role_tag']}", "unknown role", f"{tag!r}; known: {sorted(roles)}")
        messages.append(_message(turn, roles[tag], tags, where))
    return messages, system, 1 if turns and isinstance(turns[0], dict) and system is not None else 0


def _message(turn: dict, role: str, tags: dict, where: str) -> dict:
    if role == ASSISTANT and turn.get("tool_calls"):  # OpenAI: an assistant turn that calls tools
        calls = turn["tool_calls"]
        if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
            raise RowDefect(f"{where}.tool_calls", "tool call is not an object")
        calls = [call.get("function", call) for call in calls]
        return {"role": FUNCTION_CALL, "content": json.dumps(calls[0] if len(calls) == 1 else calls,
                                                             ensure_ascii=False)}
    if tags["content_tag"] not in turn:
        raise RowDefect(f"{where}.{tags['content_tag']}", "missing field")
    content = turn[tags["content_tag"]]
    if isinstance(content, list):
        content = _joined_parts(content, f"{where}.{tags['content_tag']}")
    message = {"role": role, "content": content}
    if "loss_weight" in turn:  # LLaMA-Factory: a turn with loss_weight 0 is context, never a target
        weight = turn["loss_weight"]
        if weight not in (0, 1) or isinstance(weight, bool):
            raise RowDefect(f"{where}.loss_weight", "loss_weight is not 0 or 1", f"got {weight!r}")
        if weight == 0:
            message["train"] = False
    return message


TEXT_PART_TYPES = ("text", "input_text", "output_text")


def _joined_parts(parts: list, where: str) -> str:
    """The text of a content given as parts (OpenAI's ``{"type": "text", "text"}``, LLaMA-Factory's
    ``{"type": "text", "value"}``), joined; an image / audio / file part makes the row a defect."""
    texts = []
    for position, part in enumerate(parts):
        place = f"{where}[{position}]"
        if not isinstance(part, dict):
            raise RowDefect(place, "content part is not an object", f"got {type(part).__name__}")
        kind = part.get("type", "text")
        if kind not in TEXT_PART_TYPES:
            raise RowDefect(place, f"{kind} part: multimodal content is not supported",
                            "only text parts can be trained on")
        text = part.get("text", part.get("value"))
        if not isinstance(text, str):
            raise RowDefect(place, "text part has no text", "expected a `text` or `value` string")
        texts.append(text)
    return "".join(texts)


def meta_of(row: dict, used_columns: set[str]) -> dict:
    """Every column the layout did not consume, kept verbatim."""
    return {key: value for key, value in row.items() if key not in used_columns}


def align_alpaca(row: dict, columns: dict, tags: dict) -> dict:
    """instruction (+ input after a blank line), output, optional system and history pairs."""
    instruction = text_field(row, columns["prompt"])
    query = text_field(row, columns["query"], required=False) or ""
    messages = _history(row.get(columns["history"]), columns["history"])
    messages += [{"role": USER, "content": f"{instruction}\n\n{query}" if query else instruction},
                 {"role": ASSISTANT, "content": text_field(row, columns["response"], empty="empty response")}]
    check_conversation(messages, columns["prompt"])
    used = {columns[key] for key in ("prompt", "query", "response", "system", "history")}
    return {"messages": messages, "system": text_field(row, columns["system"], required=False) or None,
            "tools": None, "meta": {"instruction": instruction, "input": query} | meta_of(row, used)}


def _history(history: object, field: str) -> list[dict]:
    if history in (None, []):
        return []
    if not isinstance(history, list):
        raise RowDefect(field, "history is not a list of [user, assistant] pairs")
    messages = []
    for position, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise RowDefect(f"{field}[{position}]", "history is not a list of [user, assistant] pairs")
        if not pair[0].strip() or not pair[1].strip():
            raise RowDefect(f"{field}[{position}]", "empty turn" if not pair[0].strip() else "empty response")
        messages += [{"role": USER, "content": pair[0]}, {"role": ASSISTANT, "content": pair[1]}]
    return messages


def align_sharegpt(row: dict, columns: dict, tags: dict) -> dict:
    """``conversations`` of role/content turns (tags name the keys and roles), ``system``, ``tools``."""
    field = columns["messages"]
    if field not in row:
        raise RowDefect(field, "missing field")
    messages, system_turn, offset = map_turns(row[field], field, tags)
    check_conversation(messages, field, offset=offset)
    system = text_field(row, columns["system"], required=False) if columns.get("system") else None
    used = {columns[key] for key in ("messages", "system", "tools") if columns.get(key)}
    return {"messages": messages, "system": system or system_turn or None,
            "tools": tools_field(row, columns.get("tools")), "meta": meta_of(row, used)}


def align_prompt_completion(row: dict, columns: dict, tags: dict) -> dict:
    """TRL's prompt / completion, each a string or a list of OpenAI messages."""
    prompt, system = _turns_or_text(row, columns["prompt"], USER, tags)
    check_conversation(prompt, columns["prompt"], final_answer=False)
    completion, _ = _turns_or_text(row, columns["completion"], ASSISTANT, tags)
    messages = check_conversation(prompt + completion, columns["completion"])
    system = system or text_field(row, columns["system"], required=False) or None
    used = {columns["prompt"], columns["completion"], columns["system"]}
    return {"messages": messages, "system": system, "tools": None, "meta": meta_of(row, used)}


def _turns_or_text(row: dict, column: str, role: str, tags: dict) -> tuple[list[dict], str | None]:
    value = row.get(column)
    if isinstance(value, list):
        messages, system, _ = map_turns(value, column, tags)
        return messages, system
    return [{"role": role, "content": text_field(row, column, empty="empty response" if role == ASSISTANT
                                                  else "empty field")}], None


def align_text(row: dict, columns: dict, tags: dict) -> dict:
    """Plain text for continued pretraining."""
    return {"text": text_field(row, columns["text"]), "meta": meta_of(row, {columns["text"]})}
