"""llama.cpp as a generation backend: a GGUF served in-process by llama.cpp's own HTTP server.

``xllamacpp`` (a prebuilt wheel of llama.cpp's server, no compiling) runs the server on 127.0.0.1
in this process; :func:`complete_ids` sends it prompts as **token ids** (``/completion`` takes a
list of ids), the ids :func:`llm_finetune.tokens.conversations.encode_prompts` made from the
training template for the transformers backend too, so both backends read the same input
without a second tokenizer in between. Requests run ``n_parallel`` at a time (the server's slots,
continuous batching), answers come back as ids and are decoded by
:func:`llm_finetune.evaluation.generation.completion_texts`, as the transformers backend's are.
httpx is the client (already the judges' one); the server is the one the judge tests run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def wait_healthy(base_url: str, timeout_s: float = 120.0, poll_s: float = 0.25) -> None:
    """Poll ``{base_url}/health`` until it answers 200 ``{"status": "ok"}``, else raise."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base_url}/health", timeout=min(10.0, timeout_s))
            if response.status_code == 200 and response.json().get("status") == "ok":
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except (httpx.HTTPError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(poll_s)
    raise TimeoutError(f"llama.cpp server at {base_url} not healthy after {timeout_s} s ({last})")


@contextmanager
def llamacpp_server(model_path: str | Path, *, n_ctx: int = 2048, n_threads: int = 2, n_parallel: int = 2,
                    ready_timeout_s: float = 120.0, verbosity: int = 1) -> Iterator[str]:
    """Serve ``model_path`` with llama.cpp on 127.0.0.1; yield the base URL, then stop.

    ``n_ctx`` is the KV size shared by ``n_parallel`` slots (each gets ``n_ctx / n_parallel``).
    ``port = 0`` lets llama.cpp bind a free port itself (no pick-then-bind race). The server is
    a C++ object: dropping the last reference stops its loop, joins its threads and closes the
    socket. ``verbosity`` is llama.cpp's stderr log level (0 silent, 1 errors, 3 info).
    """
    import xllamacpp

    if not Path(model_path).is_file():
        raise FileNotFoundError(f"GGUF model file not found: {model_path}")
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.n_ctx = n_ctx
    params.n_parallel = n_parallel
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.ui = False
    params.verbosity = verbosity
    server = xllamacpp.Server(params)  # returns once the model is loaded and the listener is up
    try:
        base_url = server.listening_address.rstrip("/")
        if not base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"unexpected llama.cpp listening address {base_url!r}")
        wait_healthy(base_url, ready_timeout_s)
        yield base_url
    finally:
        del server


def completion_request(prompt_ids: list[int], decoding, seed_offset: int = 0) -> dict:
    """A ``/completion`` body for one prompt under ``decoding`` (:class:`~llm_finetune.evaluation.generation.Decoding`).

    Greedy is ``temperature 0`` (llama.cpp takes the arg-max); sampling passes temperature, top-p and
    top-k and a per-prompt seed. The prompt cache is off so an answer never depends on which slot
    served the previous one."""
    body = {"prompt": prompt_ids, "n_predict": decoding.max_new_tokens, "return_tokens": True,
            "cache_prompt": False, "stream": False}
    if decoding.do_sample:
        body |= {"temperature": decoding.temperature, "top_p": decoding.top_p, "top_k": decoding.top_k,
                 "seed": decoding.seed + seed_offset}
    else:
        body |= {"temperature": 0.0}
    if decoding.stop_strings:
        body["stop"] = list(decoding.stop_strings)
    return body


def complete_ids(base_url: str, encoded: list[list[int]], decoding, end_ids: list[int], concurrency: int = 2,
                 timeout_s: float = 600.0, progress: bool = True) -> tuple[list[list[int]], dict]:
    """New token ids per prompt from the server, ``concurrency`` requests at a time, in input order,
    each cut after the first of ``end_ids`` (llama.cpp itself stops at the GGUF's end-of-generation
    tokens). ``timing`` has the same keys as the transformers backend's."""
    ends = set(end_ids)
    started = time.perf_counter()

    def one(index: int) -> list[int]:
        response = client.post(f"{base_url}/completion", json=completion_request(encoded[index], decoding, index))
        response.raise_for_status()
        tokens = [int(t) for t in response.json().get("tokens") or []]
        for position, token in enumerate(tokens):
            if token in ends:
                return tokens[: position + 1]
        return tokens

    with httpx.Client(timeout=timeout_s) as client, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        generated = list(tqdm(pool.map(one, range(len(encoded))), total=len(encoded), desc="generate (llama.cpp)",
                              unit="prompt", disable=not progress))
    seconds = time.perf_counter() - started
    total_new = sum(len(ids) for ids in generated)
    timing = {"seconds": round(seconds, 2), "rows": len(encoded), "new_tokens": total_new, "backend": "llamacpp",
              "tokens_per_s": round(total_new / seconds, 1) if seconds else None,
              "responses_per_s": round(len(encoded) / seconds, 2) if seconds else None, "concurrency": concurrency}
    return generated, timing


LLAMACPP_DEFAULTS = {"gguf_type": "f16", "concurrency": 2, "n_threads": None, "converter_dir": None}


def generate_with_llamacpp(model, tokenizer, encoded: list[list[int]], decoding, end_ids: list[int],
                           settings: dict | None = None) -> tuple[list[list[int]], dict]:
    """The ``generate.backend: llamacpp`` path: ``model`` (base, or base with the adapter merged) written
    as a GGUF of ``settings['gguf_type']`` into a scratch folder by llama.cpp's converter, served,
    and asked for every prompt; the scratch folder is removed afterwards."""
    import os
    import tempfile

    from llm_finetune.models.gguf_export import convert_to_gguf

    settings = LLAMACPP_DEFAULTS | (settings or {})
    concurrency = int(settings["concurrency"])
    longest = max((len(ids) for ids in encoded), default=1) + decoding.max_new_tokens + 8
    with tempfile.TemporaryDirectory(prefix="llamacpp-") as scratch:
        folder = Path(scratch) / "model"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        started = time.perf_counter()
        gguf_file = convert_to_gguf(folder, Path(scratch) / f"model-{settings['gguf_type']}.gguf",
                                    settings["gguf_type"], settings["converter_dir"])
        convert_s = time.perf_counter() - started
        threads = int(settings["n_threads"] or os.cpu_count() or 1)
        with llamacpp_server(gguf_file, n_ctx=longest * concurrency, n_threads=threads, n_parallel=concurrency) as url:
            generated, timing = complete_ids(url, encoded, decoding, end_ids, concurrency=concurrency)
    return generated, timing | {"gguf_type": settings["gguf_type"], "convert_seconds": round(convert_s, 2)}


def stream_ids(base_url: str, prompt_ids: list[int], decoding, end_ids: list[int], on_tokens=None,
               timeout_s: float = 600.0) -> list[int]:
    """One prompt's new ids, streamed (server-sent events): ``on_tokens(ids)`` gets each piece as it comes
    (chat prints it), and the stream is closed at the first of ``end_ids``, which is kept last."""
    import json

    body = completion_request(prompt_ids, decoding) | {"stream": True}
    ends, generated = set(end_ids), []
    with httpx.stream("POST", f"{base_url}/completion", json=body, timeout=timeout_s) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[len("data: "):])
            piece = [int(t) for t in chunk.get("tokens") or []]
            cut = next((i + 1 for i, token in enumerate(piece) if token in ends), None)
            piece = piece[:cut] if cut else piece
            generated += piece
            if piece and on_tokens is not None:
                on_tokens(piece)
            if cut or chunk.get("stop"):
                break
    return generated
