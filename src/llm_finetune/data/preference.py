"""Preference layouts: a prompt, a chosen answer and a rejected answer.

Aligned to ``{"prompt": [...messages], "chosen": msg, "rejected": msg, "system", "tools", "meta"}``
from every layout we have met:

* ``alpaca`` with ``ranking``: the book's instruction / input / output + ``chosen`` / ``rejected``
  strings, and LLaMA-Factory's alpaca ranking sets;
* ``sharegpt`` / ``openai`` with ``ranking``: LLaMA-Factory's ``conversations`` (the prompt turns)
  + ``chosen`` / ``rejected`` turns;
* ``preference``: TRL's prompt / chosen / rejected, strings or message lists, with the prompt
  implicit (the shared prefix of chosen and rejected) when there is no prompt column;
* ``medicalgpt``: MedicalGPT's system / history / question / response_chosen / response_rejected.

A pair whose chosen and rejected answers are identical is quarantined (reason
:data:`IDENTICAL_PAIR`, counted as ``identical_pairs`` in the align report): it carries no preference,
and a reward model or DPO would train on a tie as if it were a preference.
"""

from __future__ import annotations

from llm_finetune.data.formats import (
    ANSWER_ROLES,
    ASSISTANT,
    PROMPT_ROLES,
    USER,
    RowDefect,
    _history,
    check_conversation,
    map_turns,
    meta_of,
    text_field,
    tools_field,
)

IDENTICAL_PAIR = "chosen equals rejected"


def _pair(prompt: list[dict], chosen: dict, rejected: dict, system, tools, meta: dict, field: str) -> dict:
    check_conversation(prompt, field, final_answer=False)
    if prompt[-1]["role"] not in PROMPT_ROLES:
        raise RowDefect(field, "prompt does not end with a user turn", f"ends with {prompt[-1]['role']!r}")
    for name, answer in (("chosen", chosen), ("rejected", rejected)):
        if answer["role"] not in ANSWER_ROLES:
            raise RowDefect(name, "answer is not from the assistant", f"role {answer['role']!r}")
    if chosen["content"] == rejected["content"]:
        raise RowDefect("rejected", IDENTICAL_PAIR, "the chosen and rejected answers are the same text")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "system": system or None,
            "tools": tools, "meta": meta}


def align_alpaca_pair(row: dict, columns: dict, tags: dict) -> dict:
    instruction = text_field(row, columns["prompt"])
    query = text_field(row, columns["query"], required=False) or ""
    prompt = _history(row.get(columns["history"]), columns["history"])
    prompt.append({"role": USER, "content": f"{instruction}\n\n{query}" if query else instruction})
    used = {columns[k] for k in ("prompt", "query", "response", "system", "history", "chosen", "rejected")}
    meta = {"instruction": instruction, "input": query} | meta_of(row, used)
    if isinstance(row.get(columns["response"]), str):
        meta["output"] = row[columns["response"]]
    return _pair(prompt, _answer(row, columns["chosen"]), _answer(row, columns["rejected"]),
                 text_field(row, columns["system"], required=False), None, meta, columns["prompt"])


def _answer(row: dict, column: str) -> dict:
    return {"role": ASSISTANT, "content": text_field(row, column, empty="empty response")}


def align_sharegpt_pair(row: dict, columns: dict, tags: dict) -> dict:
    field = columns["messages"]
    if field not in row:
        raise RowDefect(field, "missing field")
    prompt, system_turn, offset = map_turns(row[field], field, tags)
    check_conversation(prompt, field, final_answer=False, offset=offset)
    answers = []
    for name in ("chosen", "rejected"):
        turn = row.get(columns[name])
        if not isinstance(turn, dict):
            raise RowDefect(columns[name], "missing field" if turn is None else "answer is not a turn object")
        messages, _, _ = map_turns([turn], columns[name], tags)
        if not messages:
            raise RowDefect(columns[name], "answer is not from the assistant", "a system turn")
        answers.append(_checked_answer(messages[0], columns[name]))
    system = text_field(row, columns["system"], required=False) if columns.get("system") else None
    used = {columns[k] for k in ("messages", "system", "tools", "chosen", "rejected") if columns.get(k)}
    return _pair(prompt, answers[0], answers[1], system or system_turn, tools_field(row, columns.get("tools")),
                 meta_of(row, used), field)


def _checked_answer(message: dict, field: str) -> dict:
    if not isinstance(message["content"], str):
        raise RowDefect(field, "content is not a string", f"got {type(message['content']).__name__}")
    if not message["content"].strip():
        raise RowDefect(field, "empty response")
    return message


def align_trl_pair(row: dict, columns: dict, tags: dict) -> dict:
    """TRL: explicit prompt (string or messages), or implicit (shared prefix of chosen and rejected)."""
    chosen, rejected = (_turn_list(row, columns[name], tags) for name in ("chosen", "rejected"))
    system = None
    if columns["prompt"] in row:
        if isinstance(row[columns["prompt"]], list):
            prompt, system, _ = map_turns(row[columns["prompt"]], columns["prompt"], tags)
        else:
            prompt = [{"role": USER, "content": text_field(row, columns["prompt"])}]
    else:
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        if shared == 0:
            raise RowDefect(columns["chosen"], "no prompt", "no prompt column and no shared prefix in chosen/rejected")
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    for name, answer in ((columns["chosen"], chosen), (columns["rejected"], rejected)):
        if len(answer) != 1:
            raise RowDefect(name, "answer is not a single turn", f"{len(answer)} turns")
    used = {columns[k] for k in ("prompt", "chosen", "rejected", "system")}
    return _pair(prompt, _checked_answer(chosen[0], columns["chosen"]), _checked_answer(rejected[0], columns["rejected"]),
                 system or text_field(row, columns["system"], required=False), None, meta_of(row, used),
                 columns["prompt"])


def _turn_list(row: dict, column: str, tags: dict) -> list[dict]:
    value = row.get(column)
    if isinstance(value, list):
        return map_turns(value, column, tags)[0]
    return [{"role": ASSISTANT, "content": text_field(row, column, empty="empty response")}]


def align_medicalgpt_pair(row: dict, columns: dict, tags: dict) -> dict:
    prompt = _history(row.get(columns["history"]), columns["history"])
    prompt.append({"role": USER, "content": text_field(row, columns["question"])})
    used = {columns[k] for k in ("system", "history", "question", "chosen", "rejected")}
    return _pair(prompt, _answer(row, columns["chosen"]), _answer(row, columns["rejected"]),
                 text_field(row, columns["system"], required=False), None, meta_of(row, used), columns["question"])
