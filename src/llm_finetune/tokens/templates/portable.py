"""The training template in the template languages of the runtimes a tuned model goes to.

A model answers well only in the text it was trained on. transformers' ``apply_chat_template``,
llama.cpp (the ``tokenizer.chat_template`` of a GGUF) and MLflow's chat models read a **Jinja**
template; Ollama reads a Go ``text/template`` in its Modelfile. Both are written here from the
same :class:`ChatTemplate` slots that :func:`render_pieces` fills, so a chat rendered by any of
them is the training text (tests render each through the real engine: jinja2 as transformers
runs it, Go's own ``text/template`` for Ollama).

Every literal is emitted as a quoted string expression, never as raw template text, so the
whitespace-trimming markers cannot eat a template's newlines. ``{eos}`` / ``{bos}`` are resolved
to the tokenizer's texts here. What a chat message cannot carry is left out and documented:
the alpaca ``user_with_input`` form (it needs the record's ``meta``), tool definitions and
function calls (their formats differ per runtime); a tool result (``tool`` role) uses the
``observation`` slot.
"""

from __future__ import annotations

import json

from llm_finetune.tokens.templates import TOKENIZER, ChatTemplate, TemplateError, _fill, _specials

CONTENT = "\x00content\x00"


def _around_content(slot: str, specials: dict) -> tuple[str, str]:
    """A slot's text before and after ``{content}`` (the whole slot before it when it has none)."""
    text = _fill(slot, specials | {"content": CONTENT})
    before, _, after = text.partition(CONTENT)
    return before, after


def _jinja_literal(text: str) -> str:
    return "{{ " + json.dumps(text) + " }}" if text else ""


def to_jinja(template: ChatTemplate | str, tokenizer) -> str:
    """A Jinja chat template (``messages``, ``add_generation_prompt``) that renders ``template``'s text.

    For ``tokenizer`` the model's own template is returned unchanged.
    """
    if template == TOKENIZER:
        return tokenizer.chat_template
    specials = _specials(tokenizer)
    lit = _jinja_literal
    user_before, user_after = _around_content(template.user, specials)
    answer_before, answer_after = _around_content(template.answer, specials)
    suffix = _fill(template.answer_suffix, specials)
    prefix = _fill(template.answer_prefix, specials)
    default = json.dumps(template.default_system) if template.default_system else "none"
    parts = [
        "{%- set has_system = messages and messages[0]['role'] == 'system' -%}",
        "{%- set system = messages[0]['content'] if has_system else " + default + " -%}",
        "{%- set chat = messages[1:] if has_system else messages -%}",
        lit(_fill(template.bos, specials)),
    ]
    first_user_prefix = "''"
    if template.system_in_first_user:
        sys_before, sys_after = _around_content(template.system or "{content}", specials)
        first_user_prefix = f"({json.dumps(sys_before)} + system + {json.dumps(sys_after)}) if system else ''"
    elif template.system is not None:
        sys_before, sys_after = _around_content(template.system, specials)
        parts.append("{%- if system -%}" + lit(sys_before) + "{{ system }}" + lit(sys_after) + "{%- endif -%}")
    else:
        parts.append("{%- if system -%}{{ raise_exception('template " + template.name
                     + " has no system slot') }}{%- endif -%}")
    parts += [
        "{%- set ns = namespace(first_user=true) -%}",
        "{%- for message in chat -%}",
        "{%- if message['role'] == 'user' -%}",
        "{%- set lead = (" + first_user_prefix + ") if ns.first_user else '' -%}{%- set ns.first_user = false -%}",
        lit(user_before) + "{{ lead + message['content'] }}" + lit(user_after),
        "{%- elif message['role'] == 'assistant' -%}",
        lit(prefix) + lit(answer_before) + "{{ message['content'] }}" + lit(answer_after) + lit(suffix),
        "{%- if not loop.last -%}" + lit(_fill(template.turn_separator, specials)) + "{%- endif -%}",
    ]
    if template.observation is not None:
        obs_before, obs_after = _around_content(template.observation, specials)
        parts += ["{%- elif message['role'] in ('tool', 'observation') -%}",
                  lit(obs_before) + "{{ message['content'] }}" + lit(obs_after)]
    parts += [
        "{%- else -%}{{ raise_exception('role ' + message['role'] + ' is not in template " + template.name + "') }}",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}" + lit(prefix) + "{%- endif -%}",
    ]
    return "\n".join(part for part in parts if part)


def _go_literal(text: str) -> str:
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def to_ollama_template(template: ChatTemplate, tokenizer) -> str:
    """An Ollama Modelfile ``TEMPLATE`` (Go ``text/template`` over ``.System`` and ``.Messages``).

    Ollama passes the system prompt (the request's, else the Modelfile's ``SYSTEM``) as ``.System``
    and every message, system ones included, in ``.Messages``; the loop skips system messages.
    The generation prompt (``answer_prefix``) follows a conversation that ends with a user turn.
    """
    if template == TOKENIZER:
        raise TemplateError("an Ollama template is written from a template file; the model's own Jinja "
                            "template (tokenize.template: tokenizer) has no Go translation here")
    specials = _specials(tokenizer)
    lit = _go_literal
    user_before, user_after = _around_content(template.user, specials)
    answer_before, answer_after = _around_content(template.answer, specials)
    suffix = _fill(template.answer_suffix, specials)
    prefix = _fill(template.answer_prefix, specials)
    parts = [lit(_fill(template.bos, specials))]
    lead = ""
    if template.system_in_first_user:
        sys_before, sys_after = _around_content(template.system or "{content}", specials)
        lead = "{{- if and $.System (eq $i $first) }}" + lit(sys_before) + "{{ $.System }}" + lit(sys_after) \
               + "{{- end }}"
    elif template.system is not None:
        sys_before, sys_after = _around_content(template.system, specials)
        parts.append("{{- if .System }}" + lit(sys_before) + "{{ .System }}" + lit(sys_after) + "{{- end }}")
    parts += [
        "{{- $first := -1 }}",
        "{{- range $i, $m := .Messages }}{{- if and (eq $m.Role \"user\") (lt $first 0) }}{{- $first = $i }}"
        "{{- end }}{{- end }}",
        "{{- $chat := 0 }}",
        "{{- range $i, $m := .Messages }}{{- if ne $m.Role \"system\" }}{{- $chat = $i }}{{- end }}{{- end }}",
        "{{- range $i, $m := .Messages }}",
        "{{- if eq $m.Role \"user\" }}" + lit(user_before) + lead + "{{ $m.Content }}" + lit(user_after),
        "{{- else if eq $m.Role \"assistant\" }}" + lit(prefix) + lit(answer_before) + "{{ $m.Content }}"
        + lit(answer_after) + lit(suffix) + "{{- if lt $i $chat }}" + lit(_fill(template.turn_separator, specials))
        + "{{- end }}",
    ]
    if template.observation is not None:
        obs_before, obs_after = _around_content(template.observation, specials)
        parts.append("{{- else if eq $m.Role \"tool\" }}" + lit(obs_before) + "{{ $m.Content }}" + lit(obs_after))
    parts += [
        "{{- end }}",
        "{{- end }}",
        "{{- if and .Messages (ne (index .Messages $chat).Role \"assistant\") }}" + lit(prefix) + "{{- end }}",
    ]
    return "\n".join(part for part in parts if part)


def ollama_stops(template: ChatTemplate, tokenizer) -> list[str]:
    """Texts that end an answer under ``template``: its stop strings and the answer suffix (EOS for most)."""
    specials = _specials(tokenizer)
    texts = [_fill(text, specials) for text in template.stop] + [_fill(template.answer_suffix, specials).strip()]
    return list(dict.fromkeys(text for text in texts if text))


def ollama_modelfile(template: ChatTemplate, tokenizer, gguf_name: str, parameters: dict | None = None) -> str:
    """An Ollama ``Modelfile`` for ``gguf_name`` (next to it): the training template as ``TEMPLATE``, its
    default system prompt as ``SYSTEM``, its end-of-answer texts as ``stop`` parameters."""
    body = to_ollama_template(template, tokenizer)
    if '"""' in body or '"""' in (template.default_system or ""):
        raise TemplateError(f"template {template.name!r} holds three double quotes, which end a Modelfile string")
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{body}"""']
    if template.default_system:
        lines.append(f'SYSTEM """{template.default_system}"""')
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in ollama_stops(template, tokenizer)]
    lines += [f"PARAMETER {key} {value}" for key, value in (parameters or {}).items()]
    return "\n".join(lines) + "\n"
