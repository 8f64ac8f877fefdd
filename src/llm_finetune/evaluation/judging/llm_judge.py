"""LLM-as-judge scoring against a local or remote chat endpoint.

The judge follows *Build a Large Language Model (From Scratch)*, ch. 7: a
second model rates each response from 0 to 100 given the instruction and the
reference answer. HTTP is done with ``httpx``; what is hand-written here is
only what no library provides for both targets at once: two small protocol
adapters (Ollama's ``/api/chat`` and the OpenAI-compatible
``/chat/completions``, a few lines each), a tolerant score parser, and a
retry loop with exponential backoff around a bounded thread pool. Pulling in
an SDK per protocol would add two dependencies for two POST requests.

A failed or unparsable judgement never raises and is never dropped: it is
returned with ``score=None`` alongside its raw text and/or error.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import httpx
from tqdm.auto import tqdm

from llm_finetune.provenance import redact_url

logger = logging.getLogger(__name__)

BOOK_PROMPT = (
    "Given the input `{input}` and correct output `{reference}`, "
    "score the model response `{response}` on a scale from 0 to 100, "
    "where 100 is the best score. Respond with the integer number only."
)

APIS = ("ollama", "openai")
_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "ollama": None}
_CHECK_CONNECT_TIMEOUT_S = 5.0
_CHECK_READ_TIMEOUT_S = 30.0


class JudgeEndpointError(RuntimeError):
    """The judge endpoint is unreachable, rejects us, or lacks the model."""


@dataclass(frozen=True)
class JudgeEndpoint:
    """Where and how to ask the judge model.

    ``url`` is a base URL. For ``api="openai"`` it includes the version prefix,
    like the OpenAI SDK's ``base_url`` (``http://host:8080/v1``); requests go to
    ``{url}/chat/completions``. For ``api="ollama"`` it is the server root
    (``http://127.0.0.1:11434``); requests go to ``{url}/api/chat``.
    ``max_retries`` counts retries, so a request is tried at most
    ``max_retries + 1`` times, sleeping ``backoff_s * 2**k`` in between.
    """

    url: str
    model: str
    api: Literal["ollama", "openai"]
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 120.0
    max_retries: int = 3
    concurrency: int = 4
    seed: int = 123
    temperature: float = 0.0
    prompt_template: str = BOOK_PROMPT
    max_tokens: int = 32
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", str(self.url).rstrip("/"))
        _validate(self)

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], credentials: Mapping[str, Any] | None = None
    ) -> JudgeEndpoint:
        """Build from a ``judge.llm`` parameters block and optional credentials.

        The key comes from ``credentials["api_key"]``, else from the environment
        variable named by ``params["api_key_env"]`` (default ``OPENAI_API_KEY``
        for openai, none for ollama). A missing default variable is fine (local
        OpenAI-compatible servers need no key); a missing explicit one is not.
        """
        params = dict(params)
        allowed = ({f.name for f in fields(cls)} - {"api_key"}) | {"api_key_env"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(
                f"Unknown judge.llm parameter(s) {unknown}; allowed: {sorted(allowed)}"
            )
        for name in ("url", "model", "api"):
            if not params.get(name):
                raise ValueError(f"judge.llm.{name} is required")
        api = params["api"]
        if api not in APIS:
            raise ValueError(f"judge.llm.api must be one of {', '.join(APIS)}; got {api!r}")
        explicit_env = "api_key_env" in params
        key_env = params.pop("api_key_env", _DEFAULT_KEY_ENV[api])
        return cls(**params, api_key=_resolve_key(credentials, key_env, explicit_env))

    @property
    def chat_url(self) -> str:
        """URL of the chat endpoint for this API."""
        return f"{self.url}/chat/completions" if self.api == "openai" else f"{self.url}/api/chat"

    @property
    def models_url(self) -> str:
        """URL listing the models served for this API."""
        return f"{self.url}/models" if self.api == "openai" else f"{self.url}/api/tags"

    def headers(self) -> dict[str, str]:
        """Request headers, with bearer auth when a key is configured."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _resolve_key(
    credentials: Mapping[str, Any] | None, key_env: str | None, explicit_env: bool
) -> str | None:
    if credentials and credentials.get("api_key"):
        return str(credentials["api_key"])
    if not key_env:
        return None
    key = os.environ.get(key_env)
    if not key and explicit_env:
        raise ValueError(f"judge.llm.api_key_env names {key_env!r}, which is not set or empty")
    return key or None


def _validate(endpoint: JudgeEndpoint) -> None:
    if endpoint.api not in APIS:
        raise ValueError(f"judge api must be one of {', '.join(APIS)}; got {endpoint.api!r}")
    if not endpoint.url.startswith(("http://", "https://")):
        raise ValueError(f"judge url must start with http:// or https://; got {redact_url(endpoint.url)!r}")
    if not str(endpoint.model).strip():
        raise ValueError("judge model must be a non-empty string")
    if endpoint.concurrency < 1 or endpoint.max_retries < 0 or endpoint.timeout_s <= 0:
        raise ValueError("judge needs concurrency >= 1, max_retries >= 0 and timeout_s > 0")
    try:
        endpoint.prompt_template.format(input="", reference="", response="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            "judge prompt_template may only use the placeholders {input}, {reference}, "
            f"{{response}} (double literal braces): {exc!r}"
        ) from exc


def _describe(endpoint: JudgeEndpoint) -> str:
    return f"LLM judge endpoint {redact_url(endpoint.url)} ({endpoint.api})"


def _strip_latest(name: str) -> str:
    return name[: -len(":latest")] if name.endswith(":latest") else name


def _served_models(endpoint: JudgeEndpoint, payload: Any) -> list[str]:
    if endpoint.api == "openai":
        return [str(item["id"]) for item in payload.get("data", [])]
    return [str(item.get("name") or item.get("model")) for item in payload.get("models", [])]


def check_endpoint(endpoint: JudgeEndpoint) -> None:
    """Fail fast unless the endpoint answers and serves ``endpoint.model``."""
    where = _describe(endpoint)
    timeout = httpx.Timeout(
        min(endpoint.timeout_s, _CHECK_READ_TIMEOUT_S), connect=_CHECK_CONNECT_TIMEOUT_S
    )
    try:
        response = httpx.get(endpoint.models_url, headers=endpoint.headers(), timeout=timeout)
    except httpx.HTTPError as exc:
        raise JudgeEndpointError(
            f"{where} is unreachable: {type(exc).__name__}: {exc}. "
            "Start the server or remove `judge.llm` from parameters."
        ) from exc
    if not response.is_success:
        hint = " Check the API key." if response.status_code in (401, 403) else ""
        raise JudgeEndpointError(
            f"{where} answered GET {endpoint.models_url} with HTTP {response.status_code}: "
            f"{response.text[:200]!r}.{hint}"
        )
    try:
        served = _served_models(endpoint, response.json())
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise JudgeEndpointError(
            f"{where} returned an unexpected model list from {endpoint.models_url}: {exc!r}"
        ) from exc
    if _strip_latest(endpoint.model) not in {_strip_latest(name) for name in served}:
        raise JudgeEndpointError(
            f"{where} does not serve model {endpoint.model!r}; available: "
            f"{served[:10]}{' ...' if len(served) > 10 else ''}"
        )


_NUMBER = re.compile(r"(?<![\w.,])-?\d+(?:\.\d+)?(?![\w]|[.,]\d)")
_SCALE = re.compile(r"\b0\s*(?:-|–|to)\s*100\b", re.IGNORECASE)
_DENOMINATOR_BEFORE = re.compile(r"(?:/|\bout\s+of)\s*$", re.IGNORECASE)


def parse_score(text: str | None) -> int | None:
    """Extract a 0..100 score from a judge reply, or ``None``.

    Takes the first number in range, skipping denominators (``/100``,
    ``out of 100``) and scale mentions (``0-100``, ``0 to 100``). Decimals are
    rounded half up (``85.5`` -> 86); numbers outside 0..100 are ignored.
    """
    if not text:
        return None
    text = _SCALE.sub(" ", text)
    for match in _NUMBER.finditer(text):
        if _DENOMINATOR_BEFORE.search(text, 0, match.start()):
            continue
        value = float(match.group())
        if 0 <= value <= 100:
            return min(100, math.floor(value + 0.5))
    return None


def _request_body(endpoint: JudgeEndpoint, prompt: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    if endpoint.api == "openai":
        return {
            "model": endpoint.model,
            "messages": messages,
            "temperature": endpoint.temperature,
            "seed": endpoint.seed,
            "max_tokens": endpoint.max_tokens,
        }
    return {
        "model": endpoint.model,
        "messages": messages,
        "stream": False,
        "options": {
            "temperature": endpoint.temperature,
            "seed": endpoint.seed,
            "num_predict": endpoint.max_tokens,
        },
    }


def _reply_text(endpoint: JudgeEndpoint, payload: Any) -> str:
    if endpoint.api == "openai":
        content = payload["choices"][0]["message"]["content"]
    else:
        content = payload["message"]["content"]
    return "" if content is None else str(content)


def _retryable(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def _result(
    score: int | None, raw: str | None, error: str | None, attempts: int
) -> dict[str, Any]:
    return {"score": score, "raw": raw, "error": error, "attempts": attempts}


def judge_one(client: httpx.Client, endpoint: JudgeEndpoint, prompt: str) -> dict[str, Any]:
    """Ask the judge to score one prompt; never raises for HTTP or parse failures.

    Connection errors, timeouts, HTTP 429 and 5xx are retried with exponential
    backoff; other HTTP errors and malformed replies are not.
    """
    body = _request_body(endpoint, prompt)
    attempts, error = 0, None
    while attempts <= endpoint.max_retries:
        if attempts:
            time.sleep(endpoint.backoff_s * 2 ** (attempts - 1))
        attempts += 1
        try:
            response = client.post(endpoint.chat_url, json=body, timeout=endpoint.timeout_s)
        except httpx.TransportError as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("Judge request attempt %d failed: %s", attempts, error)
            continue
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        if response.is_success:
            return _parse_reply(endpoint, response, attempts)
        error = f"HTTP {response.status_code}: {response.text[:200]}"
        if not _retryable(response):
            break
        logger.warning("Judge request attempt %d failed: %s", attempts, error)
    return _result(None, None, error, attempts)


def _parse_reply(
    endpoint: JudgeEndpoint, response: httpx.Response, attempts: int
) -> dict[str, Any]:
    try:
        raw = _reply_text(endpoint, response.json())
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return _result(None, response.text[:500], f"malformed reply: {exc!r}", attempts)
    return _result(parse_score(raw), raw, None, attempts)


def build_prompt(endpoint: JudgeEndpoint, record: Mapping[str, Any]) -> str:
    """Fill the endpoint's template from a record's ``prompt_input``/``reference``/``response``."""
    return fill_prompt(endpoint.prompt_template, record)


def fill_prompt(template: str, record: Mapping[str, Any]) -> str:
    """Fill a judge prompt template (``{input}``, ``{reference}``, ``{response}``) from a record."""
    return template.format(input=record["prompt_input"], reference=record["reference"], response=record["response"])


def judge_records(
    records: Sequence[Mapping[str, Any]], endpoint: JudgeEndpoint
) -> list[dict[str, Any]]:
    """Judge every record concurrently; results are in input order."""
    prompts = [build_prompt(endpoint, record) for record in records]
    if not prompts:
        return []
    results: list[dict[str, Any]] = [{}] * len(prompts)
    client = httpx.Client(
        headers=endpoint.headers(),
        timeout=endpoint.timeout_s,
        limits=httpx.Limits(max_connections=endpoint.concurrency),
    )
    with client, ThreadPoolExecutor(max_workers=endpoint.concurrency) as pool:
        futures = {pool.submit(judge_one, client, endpoint, p): i for i, p in enumerate(prompts)}
        for future in tqdm(as_completed(futures), total=len(futures), desc="LLM judge", unit="row"):
            results[futures[future]] = future.result()
    return results


def summarize_llm(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate :func:`judge_records` output.

    ``llm_failed`` counts requests that ended in an error; ``llm_unparsable``
    counts replies that arrived but held no score in 0..100.
    """
    scores = [r["score"] for r in results if r.get("score") is not None]
    return {
        "llm_score_mean": sum(scores) / len(scores) if scores else None,
        "llm_scored": len(scores),
        "llm_total": len(results),
        "llm_failed": sum(1 for r in results if r.get("error") is not None),
        "llm_unparsable": sum(
            1 for r in results if r.get("score") is None and r.get("error") is None
        ),
    }
