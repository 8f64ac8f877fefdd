"""Stand-in judge servers on 127.0.0.1 speaking the OpenAI-compatible and Ollama protocols.

``serve(logic)`` runs a real ``ThreadingHTTPServer`` on an ephemeral port in a
background thread and yields its base URL; ``logic`` maps a :class:`Request`
to ``(status, json_body)``, or ``(status, Raw(...))`` to send bytes that are not
JSON. :class:`FakeJudge` provides scripted logic for both protocols and records
every request it receives.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, Any]


@dataclass(frozen=True)
class Raw:
    """A body sent verbatim instead of being JSON-encoded (garbage, HTML, truncated JSON)."""

    body: bytes | str
    content_type: str = "text/plain"

    def encoded(self) -> bytes:
        """The body as bytes (``str`` is UTF-8 encoded)."""
        return self.body.encode() if isinstance(self.body, str) else self.body


@dataclass
class Request:
    """One request as seen by the fake server (header names lowercased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


Logic = Callable[[Request], Reply]


def _handler_class(logic: Logic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=json.loads(raw) if raw else None,
            )
            status, payload = logic(request)
            if isinstance(payload, Raw):
                data, content_type = payload.encoded(), payload.content_type
            else:
                data, content_type = json.dumps(payload).encode(), "application/json"
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = _dispatch
        do_POST = _dispatch

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


@contextmanager
def serve(logic: Logic) -> Iterator[str]:
    """Serve ``logic`` on 127.0.0.1 (ephemeral port); yield ``http://127.0.0.1:PORT``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(logic))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url(prefix: str = "") -> str:
    """A base URL on 127.0.0.1 whose port was just released, so nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{prefix}"


def _prompt_of(body: Any) -> str:
    return body["messages"][-1]["content"]


def _openai_reply(text: str) -> Any:
    return {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


def _ollama_reply(text: str) -> Any:
    return {"message": {"role": "assistant", "content": text}, "done": True}


@dataclass
class FakeJudge:
    """Scripted judge for both protocols.

    ``answer`` is a constant reply or a function of the prompt. The first
    ``fail_first`` chat requests get HTTP ``fail_status``; prompts matching
    ``fail_if`` always get HTTP 500. The first ``slow_first`` chat requests, and
    every prompt matching ``delay_if``, wait ``delay_s`` before answering.
    ``respond_if`` may return a scripted ``(status, body)`` for a prompt (``None``
    falls through to the normal answer). When ``api_key`` is set, requests
    without ``Authorization: Bearer <api_key>`` get HTTP 401.
    """

    answer: str | Callable[[str], str] = "100"
    models: list[str] = field(default_factory=lambda: ["judge-model"])
    fail_first: int = 0
    fail_status: int = 503
    fail_if: Callable[[str], bool] | None = None
    slow_first: int = 0
    delay_if: Callable[[str], bool] | None = None
    delay_s: float = 0.0
    respond_if: Callable[[str], Reply | None] | None = None
    api_key: str | None = None
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _chat_count: int = 0

    @property
    def chat_requests(self) -> list[Request]:
        """Recorded chat (POST) requests, in arrival order."""
        return [r for r in self.requests if r.method == "POST"]

    def openai(self, request: Request) -> Reply:
        """OpenAI-compatible: ``GET /v1/models`` and ``POST /v1/chat/completions``."""
        return self._route(request, "/v1/models", "/v1/chat/completions", _openai_reply)

    def ollama(self, request: Request) -> Reply:
        """Ollama: ``GET /api/tags`` and ``POST /api/chat`` (``stream: false`` only)."""
        return self._route(request, "/api/tags", "/api/chat", _ollama_reply)

    def _route(
        self, request: Request, models_path: str, chat_path: str, reply: Callable[[str], Any]
    ) -> Reply:
        with self._lock:
            self.requests.append(request)
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "invalid api key"}}
        if request.method == "GET" and request.path == models_path:
            return 200, self._model_list(models_path)
        if request.method == "POST" and request.path == chat_path:
            return self._chat(request, reply)
        return 404, {"error": f"no route {request.method} {request.path}"}

    def _model_list(self, models_path: str) -> Any:
        if models_path == "/v1/models":
            return {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
        return {"models": [{"name": m, "model": m} for m in self.models]}

    def _chat(self, request: Request, reply: Callable[[str], Any]) -> Reply:
        with self._lock:
            self._chat_count += 1
            number = self._chat_count
        prompt = _prompt_of(request.body)
        if number <= self.slow_first or (self.delay_if is not None and self.delay_if(prompt)):
            time.sleep(self.delay_s)
        if number <= self.fail_first:
            return self.fail_status, {"error": "scripted failure"}
        if self.fail_if is not None and self.fail_if(prompt):
            return 500, {"error": "scripted permanent failure"}
        scripted = self.respond_if(prompt) if self.respond_if is not None else None
        if scripted is not None:
            return scripted
        if reply is _ollama_reply and request.body.get("stream", True) is not False:
            return 400, {"error": "fake ollama supports stream: false only"}
        text = self.answer(prompt) if callable(self.answer) else self.answer
        return 200, reply(text)


def fast_endpoint(url: str, api: str = "openai", **overrides: Any) -> "JudgeEndpoint":
    """A judge endpoint with short timeouts and backoff, for tests against the stand-ins."""
    from llm_finetune.evaluation.judging import JudgeEndpoint

    settings: dict = {"timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01, "concurrency": 4}
    settings.update(overrides)
    return JudgeEndpoint(url=url, model="judge-model", api=api, **settings)


def numbered_records(n: int) -> list[dict]:
    """``n`` judge records whose prompts carry ``item-<i>``, so a server can tell them apart."""
    return [
        {"prompt_input": f"Instruction item-{i}", "reference": f"ref {i}", "response": f"resp {i}"}
        for i in range(n)
    ]


def item_number(prompt: str) -> int:
    """The ``i`` of ``item-<i>`` in a prompt built from :func:`numbered_records`."""
    return int(re.search(r"item-(\d+)", prompt).group(1))
