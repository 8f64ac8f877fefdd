"""A multi-turn chat with the base model, an adapter or a merged folder, in the template it was trained with.

The conversation is rendered by the same template pieces training and evaluation use
(:func:`llm_finetune.tokens.conversations.encode_prompts`), so turn 2's prompt is turn 1's prompt, its
reply and the template's end of turn, then the new message; replies stop at the template's end ids and
stop strings, and stream through the one generation loop
(:func:`llm_finetune.evaluation.generation.generate_token_ids`) with transformers' ``TextStreamer``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from llm_finetune.evaluation.generation import Decoding, completion_texts, end_token_ids, generate_token_ids
from llm_finetune.io.paths import newest_version
from llm_finetune.tokens.conversations import encode_prompts
from llm_finetune.tokens.settings import TEMPLATE_FILE
from llm_finetune.tokens.templates import TOKENIZER, load_template, stop_strings, stop_token_ids, template_from_saved

logger = logging.getLogger(__name__)
MODELS = Path("data/06_models")


def latest_folder(stage: str, root: Path = MODELS) -> Path:
    """The newest saved ``<stage>.adapter`` version under ``root`` (``data/06_models``)."""
    newest = newest_version(Path(root) / stage / "adapter")
    if newest is None:
        raise FileNotFoundError(f"{Path(root) / stage / 'adapter'} holds no adapter yet: run "
                                f"`kedro run --pipeline {stage}` first, or pass a folder")
    return newest


def latest_base(root: Path = MODELS) -> Path:
    """The newest prepared base model (``data/06_models/base_model/<version>/base_model``)."""
    newest = newest_version(Path(root) / "base_model")
    if newest is None:
        raise FileNotFoundError(f"{Path(root) / 'base_model'} holds no base model yet: any `kedro run` prepares it")
    return newest


@dataclass
class ChatModel:
    """A model ready to chat: its folder (and adapter), tokenizer, template and end ids."""

    model: object
    tokenizer: object
    template: object
    end_ids: list[int]
    decoding: Decoding
    source: str

    @classmethod
    def load(cls, model: Path | None = None, adapter: Path | None = None, template: str | None = None,
             decoding: Decoding | None = None, models: Path = MODELS) -> ChatModel:
        """``adapter``: an adapter folder (its base is the one it names); ``model``: a transformers folder (a
        merged export; default: the project's newest base model under ``models``); ``template``: for a folder
        without ``prompt_template.json`` (default: the tokenizer's own chat template)."""
        from llm_finetune.models.loading import load_causal_lm, load_tokenizer

        if adapter is not None:
            base = Path(json.loads((Path(adapter) / "adapter_config.json").read_text())["base_model_name_or_path"])
            folder, tokenizer_folder = (model or base), adapter
        else:
            folder = model or latest_base(models)
            tokenizer_folder = folder
        tokenizer = load_tokenizer(tokenizer_folder, padding_side="left")
        saved_file = Path(tokenizer_folder) / TEMPLATE_FILE
        if saved_file.is_file():
            chosen = template_from_saved(json.loads(saved_file.read_text()), tokenizer, template)
        else:
            chosen = TOKENIZER if template in (None, TOKENIZER) else load_template(template)
        loaded = load_causal_lm(folder, adapter=adapter).eval()
        decoding = decoding or Decoding(max_new_tokens=256)
        extra = tuple(s for s in stop_strings(chosen, tokenizer) if s not in decoding.stop_strings)
        end_ids = list(dict.fromkeys([*end_token_ids(loaded, tokenizer), *stop_token_ids(chosen, tokenizer)]))
        described = f"{folder}" + (f" + adapter {adapter}" if adapter else "")
        return cls(loaded, tokenizer, chosen, end_ids, replace(decoding, stop_strings=decoding.stop_strings + extra),
                   described)


@dataclass
class Conversation:
    """The turns so far; :meth:`prompt_ids` renders them with a new user message, awaiting the reply."""

    system: str | None = None
    messages: list[dict] = field(default_factory=list)

    def prompt_ids(self, message: str, chat: ChatModel) -> list[int]:
        record = {"messages": [*self.messages, {"role": "user", "content": message},
                               {"role": "assistant", "content": ""}], "meta": {}}
        if self.system:
            record["system"] = self.system
        return encode_prompts([record], chat.template, chat.tokenizer)[0]

    def reply(self, message: str, chat: ChatModel, streamer=None) -> str:
        """The model's reply to ``message`` (streamed to ``streamer`` as it is generated), kept in the history."""
        ids = self.prompt_ids(message, chat)
        generated, _ = generate_token_ids(chat.model, chat.tokenizer, [ids], 1, chat.decoding, chat.end_ids,
                                          progress=False, streamer=streamer)
        text = completion_texts(chat.tokenizer, generated, chat.end_ids, chat.decoding)[0]
        self.messages += [{"role": "user", "content": message}, {"role": "assistant", "content": text}]
        return text

    def reset(self) -> None:
        self.messages = []
