"""Tests for the LLM judge against real stand-in HTTP servers on 127.0.0.1."""

from __future__ import annotations

import random
import re
import time

import httpx
import pytest

from llm_finetune.evaluation.judging import (
    BOOK_PROMPT,
    JudgeEndpoint,
    JudgeEndpointError,
    check_endpoint,
    judge_one,
    judge_records,
    parse_score,
    summarize_llm,
)
from tests.evaluation.judging.fake_servers import (
    FakeJudge,
    closed_port_url,
    fast_endpoint,
    item_number,
    numbered_records,
    serve,
)

pytestmark = pytest.mark.timeout(10)

KEY = "sk-test-secret-123"





@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("85", 85),
        ("I'd rate it 85 out of 100", 85),
        ("The answer is 100.", 100),
        ("Score: 72/100", 72),
        ("Score: 72 / 100", 72),
        ("85.5", 86),
        ("84.4", 84),
        ("**90**", 90),
        ("On a scale from 0 to 100, I give 65.", 65),
        ("Out of 100, this deserves 40", 40),
        ("Rating (0-100): 55", 55),
        ("150 is too much, so 95", 95),
        ("-5 then 7", 7),
        ("0", 0),
        ("no idea", None),
        ("", None),
        (None, None),
        ("1,000", None),
        ("gpt4 says nothing", None),
    ],
)
def test_parse_score(text: str | None, expected: int | None) -> None:
    assert parse_score(text) == expected


def test_book_prompt_placeholders() -> None:
    prompt = BOOK_PROMPT.format(input="I", reference="R", response="S")
    assert prompt.startswith(
        "Given the input `I` and correct output `R`, score the model response `S`"
    )
    assert prompt.endswith("Respond with the integer number only.")


def test_openai_judging_sends_deterministic_requests_and_auth() -> None:
    fake = FakeJudge(answer="I'd rate it 85 out of 100", api_key=KEY)
    with serve(fake.openai) as base:
        endpoint = fast_endpoint(f"{base}/v1", api_key=KEY, seed=7)
        results = judge_records(numbered_records(2), endpoint)
    assert [r["score"] for r in results] == [85, 85]
    assert all(r["error"] is None and r["attempts"] == 1 for r in results)
    chats = fake.chat_requests
    assert len(chats) == 2
    for request in chats:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        body = request.body
        assert body["model"] == "judge-model"
        assert body["temperature"] == 0
        assert body["seed"] == 7
        assert body["max_tokens"] == 32
        assert body.get("stream") in (None, False)
        assert len(body["messages"]) == 1 and body["messages"][0]["role"] == "user"
    prompts = sorted(r.body["messages"][0]["content"] for r in chats)
    expected = BOOK_PROMPT.format(input="Instruction item-0", reference="ref 0", response="resp 0")
    assert prompts[0] == expected


def test_ollama_judging_uses_options_and_stream_false() -> None:
    fake = FakeJudge(answer="The answer is 100.")
    with serve(fake.ollama) as base:
        results = judge_records(numbered_records(3), fast_endpoint(base, api="ollama", seed=11))
    assert [r["score"] for r in results] == [100, 100, 100]
    for request in fake.chat_requests:
        assert request.path == "/api/chat"
        assert request.body["stream"] is False
        assert request.body["model"] == "judge-model"
        assert request.body["options"] == {"temperature": 0, "seed": 11, "num_predict": 32}
        assert "authorization" not in request.headers


def test_unparsable_answer_is_kept_and_counted() -> None:
    answers = {0: "The answer is 100.", 1: "no idea", 2: "I'd rate it 85 out of 100"}
    fake = FakeJudge(answer=lambda prompt: answers[item_number(prompt)])
    with serve(fake.openai) as base:
        results = judge_records(numbered_records(3), fast_endpoint(f"{base}/v1"))
    assert [r["score"] for r in results] == [100, None, 85]
    assert results[1] == {"score": None, "raw": "no idea", "error": None, "attempts": 1}
    assert summarize_llm(results) == {
        "llm_score_mean": 92.5,
        "llm_scored": 2,
        "llm_total": 3,
        "llm_failed": 0,
        "llm_unparsable": 1,
    }


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_retries_on_503_then_succeeds(api: str) -> None:
    fake = FakeJudge(answer="70", fail_first=2)
    with serve(getattr(fake, api)) as base:
        url = f"{base}/v1" if api == "openai" else base
        results = judge_records(numbered_records(1), fast_endpoint(url, api=api, max_retries=3))
    assert results == [{"score": 70, "raw": "70", "error": None, "attempts": 3}]
    assert len(fake.chat_requests) == 3


def test_retries_on_429() -> None:
    fake = FakeJudge(answer="60", fail_first=1, fail_status=429)
    with serve(fake.openai) as base:
        results = judge_records(numbered_records(1), fast_endpoint(f"{base}/v1"))
    assert results[0]["score"] == 60 and results[0]["attempts"] == 2


def test_client_error_is_not_retried() -> None:
    fake = FakeJudge(fail_first=5, fail_status=400)
    with serve(fake.openai) as base:
        results = judge_records(numbered_records(1), fast_endpoint(f"{base}/v1"))
    assert results[0]["score"] is None
    assert results[0]["attempts"] == 1
    assert "HTTP 400" in results[0]["error"]


def test_timeout_is_retried() -> None:
    fake = FakeJudge(answer="80", slow_first=1, delay_s=0.6)
    with serve(fake.openai) as base:
        results = judge_records(numbered_records(1), fast_endpoint(f"{base}/v1", timeout_s=0.2))
    assert results[0]["score"] == 80
    assert results[0]["attempts"] == 2


def test_permanent_failure_gives_none_with_error_in_place() -> None:
    fake = FakeJudge(answer="50", fail_if=lambda prompt: item_number(prompt) == 1)
    with serve(fake.openai) as base:
        results = judge_records(numbered_records(3), fast_endpoint(f"{base}/v1", max_retries=2))
    assert [r["score"] for r in results] == [50, None, 50]
    failed = results[1]
    assert failed["raw"] is None
    assert "HTTP 500" in failed["error"]
    assert failed["attempts"] == 3
    summary = summarize_llm(results)
    assert summary["llm_failed"] == 1 and summary["llm_unparsable"] == 0
    assert summary["llm_score_mean"] == 50


def test_malformed_reply_is_an_error_not_an_exception() -> None:
    with serve(lambda request: (200, {"unexpected": True})) as base:
        results = judge_records(numbered_records(1), fast_endpoint(f"{base}/v1"))
    assert results[0]["score"] is None and results[0]["attempts"] == 1
    assert "malformed reply" in results[0]["error"]
    assert "unexpected" in results[0]["raw"]


def test_unreachable_server_gives_error_without_raising() -> None:
    endpoint = fast_endpoint(closed_port_url("/v1"), max_retries=1)
    with httpx.Client() as client:
        result = judge_one(client, endpoint, "prompt")
    assert result["score"] is None and result["attempts"] == 2
    assert "ConnectError" in result["error"]


def test_order_preserved_under_concurrency() -> None:
    rng = random.Random(0)
    delays = [rng.uniform(0, 0.05) for _ in range(24)]

    def answer(prompt: str) -> str:
        number = item_number(prompt)
        time.sleep(delays[number])
        return f"Score: {number}/100"

    fake = FakeJudge(answer=answer)
    with serve(fake.openai) as base:
        results = judge_records(numbered_records(24), fast_endpoint(f"{base}/v1", concurrency=8))
    assert [r["score"] for r in results] == list(range(24))
    arrival = [item_number(r.body["messages"][0]["content"]) for r in fake.chat_requests]
    assert sorted(arrival) == list(range(24))


def test_judge_records_empty() -> None:
    assert judge_records([], fast_endpoint("http://127.0.0.1:1/v1")) == []


def test_summarize_llm_empty() -> None:
    assert summarize_llm([]) == {
        "llm_score_mean": None,
        "llm_scored": 0,
        "llm_total": 0,
        "llm_failed": 0,
        "llm_unparsable": 0,
    }


def test_check_endpoint_passes_openai_with_key() -> None:
    fake = FakeJudge(api_key=KEY, models=["other", "judge-model"])
    with serve(fake.openai) as base:
        check_endpoint(fast_endpoint(f"{base}/v1", api_key=KEY))
    assert fake.requests[0].path == "/v1/models"


@pytest.mark.parametrize(
    ("served", "configured"),
    [("judge-model:latest", "judge-model"), ("judge-model", "judge-model:latest")],
)
def test_check_endpoint_ollama_latest_suffix(served: str, configured: str) -> None:
    fake = FakeJudge(models=["qwen:7b", served])
    with serve(fake.ollama) as base:
        check_endpoint(JudgeEndpoint(url=base, model=configured, api="ollama"))
    assert fake.requests[0].path == "/api/tags"


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_check_endpoint_closed_port_names_url(api: str) -> None:
    url = closed_port_url("/v1" if api == "openai" else "")
    with pytest.raises(JudgeEndpointError) as info:
        check_endpoint(fast_endpoint(url, api=api))
    message = str(info.value)
    assert url in message and f"({api})" in message and "unreachable" in message
    assert "judge.llm" in message


def test_check_endpoint_missing_model_lists_available() -> None:
    fake = FakeJudge(models=[f"m{i}" for i in range(12)])
    with serve(fake.openai) as base:
        with pytest.raises(JudgeEndpointError, match="judge-model") as info:
            check_endpoint(fast_endpoint(f"{base}/v1"))
    assert "m0" in str(info.value) and "m9" in str(info.value) and "m11" not in str(info.value)


def test_check_endpoint_wrong_key_reports_status() -> None:
    fake = FakeJudge(api_key=KEY)
    with serve(fake.openai) as base:
        with pytest.raises(JudgeEndpointError, match="HTTP 401") as info:
            check_endpoint(fast_endpoint(f"{base}/v1", api_key="wrong"))
    assert "wrong" not in str(info.value)


def test_repr_hides_api_key() -> None:
    endpoint = fast_endpoint("http://127.0.0.1:8080/v1", api_key=KEY)
    assert KEY not in repr(endpoint)
    assert KEY not in str(endpoint)


def test_from_params_with_credentials_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"url": "http://127.0.0.1:8080/v1/", "model": "m", "api": "openai", "concurrency": 2}
    endpoint = JudgeEndpoint.from_params(params, {"api_key": KEY})
    assert endpoint.api_key == KEY and endpoint.url == "http://127.0.0.1:8080/v1"
    assert endpoint.concurrency == 2 and endpoint.chat_url.endswith("/v1/chat/completions")
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    assert JudgeEndpoint.from_params(params).api_key == "from-env"
    monkeypatch.setenv("MY_JUDGE_KEY", "custom")
    assert JudgeEndpoint.from_params({**params, "api_key_env": "MY_JUDGE_KEY"}).api_key == "custom"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert JudgeEndpoint.from_params(params).api_key is None


def test_from_params_ollama_ignores_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    params = {"url": "http://localhost:11434", "model": "m", "api": "ollama"}
    endpoint = JudgeEndpoint.from_params(params)
    assert endpoint.api_key is None and endpoint.chat_url == "http://localhost:11434/api/chat"


OPENAI = {"url": "http://h/v1", "model": "m", "api": "openai"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"url": "http://h/v1", "model": "m", "api": "vllm"}, "ollama, openai"),
        ({"url": "localhost:8080", "model": "m", "api": "openai"}, "http:// or https://"),
        ({"url": "http://h/v1", "model": "", "api": "openai"}, "model is required"),
        ({"url": "http://h/v1", "model": " ", "api": "openai"}, "non-empty"),
        ({"model": "m", "api": "openai"}, "url is required"),
        ({**OPENAI, "temprature": 0}, "temprature"),
        ({**OPENAI, "api_key_env": "NOPE_UNSET_X"}, "NOPE_UNSET_X"),
        ({**OPENAI, "prompt_template": "{oops}"}, "placeholders"),
        ({**OPENAI, "concurrency": 0}, "concurrency"),
    ],
)
def test_from_params_validation(
    params: dict, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOPE_UNSET_X", raising=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        JudgeEndpoint.from_params(params)
