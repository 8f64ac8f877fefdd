"""Batched, left-padded generation with the KV cache; greedy by default.

Prompts are encoded by :func:`llm_finetune.tokens.conversations.encode_prompts`, from the same
template pieces training used, and sorted by length so each batch pads little; outputs come back in the
input order. Sampling (temperature / top-p / top-k, seeded) and stop strings are options.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from llm_finetune.tokens.conversations import encode_prompts
from llm_finetune.tokens.templates import load_template, stop_strings, stop_token_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoding:
    """How to pick tokens: greedy unless ``do_sample``; generation stops at EOS or a stop string."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 123
    stop_strings: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_params(cls, params: dict) -> "Decoding":
        known = {name: params[name] for name in cls.__dataclass_fields__ if params.get(name) is not None}
        known["stop_strings"] = tuple(known.get("stop_strings", ()))
        decoding = cls(**known)
        if decoding.max_new_tokens < 1 or decoding.temperature <= 0 or not 0 < decoding.top_p <= 1:
            raise ValueError(f"Bad decoding parameters: {decoding}")
        return decoding

    def generate_kwargs(self, tokenizer, end_ids: list[int] | None = None) -> dict:
        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                  "pad_token_id": tokenizer.pad_token_id, "eos_token_id": end_ids or tokenizer.eos_token_id}
        if self.do_sample:
            kwargs |= {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}
        else:
            kwargs |= {"temperature": None, "top_p": None, "top_k": None}
        if self.stop_strings:
            kwargs |= {"stop_strings": list(self.stop_strings), "tokenizer": tokenizer}
        return kwargs

    def cut(self, text: str) -> str:
        """``text`` up to the first stop string."""
        for stop in self.stop_strings:
            if stop in text:
                text = text[: text.index(stop)]
        return text.strip()


BACKENDS = ("transformers", "llamacpp")


def generate_responses(model, tokenizer, records: list[dict], template, batch_size: int,
                       max_new_tokens: int | None = None, decoding: Decoding | None = None,
                       backend: str = "transformers", llamacpp: dict | None = None) -> tuple[list[str], dict]:
    """Responses for canonical ``records`` rendered with ``template`` (a ChatTemplate or ``"tokenizer"``).

    Generation stops where the template ends an answer: its single-token stops are end ids, the
    others stop strings, added to ``decoding``'s own. ``backend: llamacpp`` generates from the same
    prompt ids with ``model`` exported to GGUF and served by llama.cpp (:mod:`llm_finetune.evaluation.llamacpp`,
    settings ``llamacpp``); the answers are decoded the same way."""
    decoding = decoding or Decoding(max_new_tokens=max_new_tokens or 64)
    template = load_template(template) if isinstance(template, str) else template
    extra = tuple(s for s in stop_strings(template, tokenizer) if s not in decoding.stop_strings)
    if extra:
        decoding = replace(decoding, stop_strings=decoding.stop_strings + extra)
    encoded = encode_prompts(records, template, tokenizer)
    if backend == "llamacpp":
        from llm_finetune.evaluation.llamacpp import generate_with_llamacpp

        end_ids = list(dict.fromkeys([*end_token_ids(model, tokenizer), *stop_token_ids(template, tokenizer)]))
        generated, timing = generate_with_llamacpp(model, tokenizer, encoded, decoding, end_ids, llamacpp)
        return completion_texts(tokenizer, generated, end_ids, decoding), timing
    return generate_from_ids(model, tokenizer, encoded, batch_size, decoding, stop_token_ids(template, tokenizer))


def check_generate_params(params: dict) -> dict:
    """Preflight for ``generate``: decoding values, the backend, and for ``llamacpp`` its GGUF type and
    the converter it needs (installed apart, :mod:`llm_finetune.models.gguf_export`)."""
    Decoding.from_params(params)
    backend = params.get("backend") or "transformers"
    if backend not in BACKENDS:
        raise ValueError(f"generate.backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "llamacpp":
        from llm_finetune.models.gguf_export import check_converter, check_gguf_types

        settings = params.get("llamacpp") or {}
        check_gguf_types([settings.get("gguf_type", "f16")])
        check_converter(settings.get("converter_dir"))
        if int(settings.get("concurrency", 2)) < 1:
            raise ValueError("generate.llamacpp.concurrency must be at least 1")
    return {"backend": backend}


def end_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's ``generation_config`` end ids.

    Passing only ``tokenizer.eos_token_id`` overrides the model's own list (Llama-3 ends a turn with
    ``<|eot_id|>``, not its EOS), and such a model then generates to ``max_new_tokens``.
    """
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, (list, tuple)) else [configured]
    ids = [tokenizer.eos_token_id, *configured]
    return list(dict.fromkeys(i for i in ids if i is not None))


def generate_from_ids(model, tokenizer, encoded: list[list[int]], batch_size: int, decoding: Decoding,
                      extra_end_ids: list[int] = ()) -> tuple[list[str], dict]:
    """Generate for already-encoded prompts (any template); ``timing`` has per-batch rows.

    A response ends at the first of :func:`end_token_ids` or ``extra_end_ids`` (the template's end of
    turn), which is not part of its text."""
    end_ids = list(dict.fromkeys([*end_token_ids(model, tokenizer), *extra_end_ids]))
    generated, timing = generate_token_ids(model, tokenizer, encoded, batch_size, decoding, end_ids)
    responses = completion_texts(tokenizer, generated, end_ids, decoding)
    logger.info("Generated %d responses in %.1f s (%s new tokens/s)", len(encoded), timing["seconds"],
                timing["tokens_per_s"])
    return responses, timing


def generate_token_ids(model, tokenizer, encoded: list[list[int]], batch_size: int, decoding: Decoding,
                       end_ids: list[int], progress: bool = True, streamer=None) -> tuple[list[list[int]], dict]:
    """The one generation loop: new token ids per prompt, up to and including the first of ``end_ids``
    (GRPO trains on them as sampled), batches sorted by prompt length, the model's train / eval mode
    restored afterwards. Seeded by ``decoding.seed``. ``streamer`` (transformers' ``TextStreamer``, for one
    prompt at a time: chat) gets the tokens as they are generated."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    generated: list[list[int]] = [[] for _ in encoded]
    pad_id = tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    torch.manual_seed(decoding.seed)
    batches, started = [], time.perf_counter()
    starts = range(0, len(order), batch_size)
    for number, start in enumerate(tqdm(starts, desc="generate", unit="batch", disable=not progress)):
        batch = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.tensor([[pad_id] * (width - len(encoded[i])) + encoded[i] for i in batch])
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in batch])
        batch_started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=True,
                                 streamer=streamer, **decoding.generate_kwargs(tokenizer, end_ids))
        for row, index in enumerate(batch):
            generated[index] = _until_end(out[row, width:].tolist(), set(end_ids))
        batches.append({"batch": number, "rows": len(batch), "prompt_width": width,
                        "new_tokens": sum(len(generated[i]) for i in batch),
                        "seconds": round(time.perf_counter() - batch_started, 3), "row_indices": batch})
    model.train(was_training)
    seconds = time.perf_counter() - started
    total_new = sum(b["new_tokens"] for b in batches)
    timing = {"seconds": round(seconds, 2), "rows": len(encoded), "new_tokens": total_new,
              "tokens_per_s": round(total_new / seconds, 1) if seconds else None,
              "responses_per_s": round(len(encoded) / seconds, 2) if seconds else None, "batches": batches}
    return generated, timing


def completion_texts(tokenizer, generated: list[list[int]], end_ids: list[int],
                     decoding: Decoding | None = None) -> list[str]:
    """The text of each :func:`generate_token_ids` answer: its end id left out, special tokens skipped, cut at
    ``decoding``'s first stop string (the one decoding every stage's answers and GRPO's completions share)."""
    ends = set(end_ids)
    texts = [tokenizer.decode(ids[:-1] if ids and ids[-1] in ends else ids, skip_special_tokens=True)
             for ids in generated]
    return [decoding.cut(text) if decoding else text.strip() for text in texts]


def _until_end(tokens: list[int], end_ids: set[int]) -> list[int]:
    """New tokens up to and including the first end id (later positions are padding)."""
    for position, token in enumerate(tokens):
        if token in end_ids:
            return tokens[: position + 1]
    return tokens
