"""Stand-in judge servers on 127.0.0.1 speaking the OpenAI-compatible and Ollama protocols.

``serve(logic)`` runs a real ``ThreadingHTTPServer`` on an ephemeral port in a
background thread and yields its base URL; ``logic`` maps a :class:`Request`
to ``(status, json_body)``. :class:`FakeJudge` provides scripted logic for
both protocols and records every request it receives.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, Any]


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
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
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
    ``fail_if`` always get HTTP 500. The first ``slow_first`` chat requests
    wait ``delay_s`` before answering. When ``api_key`` is set, requests without
    ``Authorization: Bearer <api_key>`` get HTTP 401.
    """

    answer: str | Callable[[str], str] = "100"
    models: list[str] = field(default_factory=lambda: ["judge-model"])
    fail_first: int = 0
    fail_status: int = 503
    fail_if: Callable[[str], bool] | None = None
    slow_first: int = 0
    delay_s: float = 0.0
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
        if number <= self.slow_first:
            time.sleep(self.delay_s)
        prompt = _prompt_of(request.body)
        if number <= self.fail_first:
            return self.fail_status, {"error": "scripted failure"}
        if self.fail_if is not None and self.fail_if(prompt):
            return 500, {"error": "scripted permanent failure"}
        if reply is _ollama_reply and request.body.get("stream", True) is not False:
            return 400, {"error": "fake ollama supports stream: false only"}
        text = self.answer(prompt) if callable(self.answer) else self.answer
        return 200, reply(text)
