"""A multi-turn chat with the base model, an adapter, a merged folder or a GGUF export, in the template it was
trained with.

The conversation is rendered by the same template pieces training and evaluation use
(:func:`llm_finetune.tokens.conversations.encode_prompts`), so turn 2's prompt is turn 1's prompt, its
reply and the template's end of turn, then the new message; replies stop at the template's end ids and
stop strings, and stream through the one generation loop
(:func:`llm_finetune.evaluation.generation.generate_token_ids`) with transformers' ``TextStreamer``. A GGUF
export (``export.format: gguf``) is served by llama.cpp in-process and streamed from it; the folder's
tokenizer encodes the same prompt ids, so the conversation is the same text on both engines.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
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


def latest_gguf(root: Path = MODELS) -> Path:
    """The newest GGUF export (``data/06_models/gguf_model/<version>/gguf_model``)."""
    newest = newest_version(Path(root) / "gguf_model")
    if newest is None:
        raise FileNotFoundError(f"{Path(root) / 'gguf_model'} holds no GGUF export yet: run "
                                "`kedro run --pipeline export --params export.format=gguf` first, or pass a folder")
    return newest


def gguf_file_of(path: Path) -> tuple[Path, Path]:
    """``(folder, file)`` for a GGUF export folder (its first file, the Modelfile's) or one of its files."""
    path = Path(path)
    if path.is_file():
        return path.parent, path
    record = path / "gguf.json"
    files = json.loads(record.read_text())["files"] if record.is_file() else sorted(p.name for p in path.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"{path} holds no .gguf file")
    return path, path / files[0]


@dataclass
class ChatModel:
    """A model ready to chat: its folder (and adapter), tokenizer, template and end ids. ``server`` is the
    llama.cpp URL when the model is a GGUF (``model`` is then None); :meth:`close` stops it."""

    model: object
    tokenizer: object
    template: object
    end_ids: list[int]
    decoding: Decoding
    source: str
    server: str | None = None
    resources: ExitStack = field(default_factory=ExitStack)

    def generate(self, prompt_ids: list[int], streamer=None) -> list[int]:
        """The reply's ids (its end id last), streamed to ``streamer`` (a transformers ``TextStreamer``)."""
        if self.server is None:
            generated, _ = generate_token_ids(self.model, self.tokenizer, [prompt_ids], 1, self.decoding, self.end_ids,
                                              progress=False, streamer=streamer)
            return generated[0]
        import torch

        from llm_finetune.evaluation.llamacpp import stream_ids

        if streamer is not None:
            streamer.put(torch.tensor([prompt_ids]))  # the prompt, which the streamer skips
        ids = stream_ids(self.server, prompt_ids, self.decoding, self.end_ids,
                         (lambda piece: streamer.put(torch.tensor(piece))) if streamer is not None else None)
        if streamer is not None:
            streamer.end()
        return ids

    def close(self) -> None:
        self.resources.close()

    @classmethod
    def load_gguf(cls, path: Path, decoding: Decoding | None = None, n_threads: int | None = None) -> ChatModel:
        """A GGUF export folder (or one of its ``.gguf`` files) served by llama.cpp; the folder's tokenizer
        and ``prompt_template.json`` render the conversation."""
        import os

        from llm_finetune.evaluation.llamacpp import llamacpp_server
        from llm_finetune.models.loading import load_tokenizer

        folder, gguf_file = gguf_file_of(path)
        if not (folder / TEMPLATE_FILE).is_file() or not (folder / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"{folder} lacks {TEMPLATE_FILE} or the tokenizer: chat on a GGUF needs the "
                                    "folder `kedro run --pipeline export --params export.format=gguf` writes")
        tokenizer = load_tokenizer(folder, padding_side="left")
        chosen = template_from_saved(json.loads((folder / TEMPLATE_FILE).read_text()), tokenizer)
        decoding = decoding or Decoding(max_new_tokens=256)
        extra = tuple(s for s in stop_strings(chosen, tokenizer) if s not in decoding.stop_strings)
        end_ids = list(dict.fromkeys([tokenizer.eos_token_id, *stop_token_ids(chosen, tokenizer)]))
        resources = ExitStack()
        url = resources.enter_context(llamacpp_server(gguf_file, n_ctx=4096, n_parallel=1,
                                                      n_threads=n_threads or os.cpu_count() or 1))
        return cls(None, tokenizer, chosen, end_ids, replace(decoding, stop_strings=decoding.stop_strings + extra),
                   f"{gguf_file} (llama.cpp)", server=url, resources=resources)

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
        generated = chat.generate(self.prompt_ids(message, chat), streamer)
        text = completion_texts(chat.tokenizer, [generated], chat.end_ids, chat.decoding)[0]
        self.messages += [{"role": "user", "content": message}, {"role": "assistant", "content": text}]
        return text

    def reset(self) -> None:
        self.messages = []
