"""Judge failure modes against stand-in servers: garbage bodies, timeouts, permanent 5xx.

Every failed or unparsable judgement must come back in place (same length and
order as the input) with ``score=None``, its error and/or raw text, and be
counted by :func:`summarize_llm`. ``test_llm_judge.py`` covers the single
"JSON without fields" and "500 for one record" cases; this file adds non-JSON
bodies, timeouts on every attempt, and all kinds mixed in one call.
"""

from __future__ import annotations

import pytest

from llm_finetune.evaluation.judging import judge_records, summarize_llm
from tests.evaluation.judging.fake_servers import FakeJudge, Raw, fast_endpoint, item_number, numbered_records, serve

pytestmark = pytest.mark.timeout(30)





def _base(base: str, api: str) -> str:
    return f"{base}/v1" if api == "openai" else base


GARBAGE = {
    "plain text": Raw("Internal error, please try later"),
    "html page": Raw("<html><body>502 Bad Gateway</body></html>", "text/html"),
    "truncated json": Raw('{"choices": [{"message": {"content": "8', "application/json"),
    "empty body": Raw(b"", "application/json"),
    "json without fields": {"id": "x", "object": "chat.completion"},
    "json list": [1, 2, 3],
    "json null": None,
    "empty choices": {"choices": [], "message": None},
}


@pytest.mark.parametrize("api", ["openai", "ollama"])
@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_200_reply_is_failed_with_raw_text(api: str, kind: str) -> None:
    fake = FakeJudge(respond_if=lambda prompt: (200, GARBAGE[kind]))
    with serve(getattr(fake, api)) as base:
        results = judge_records(numbered_records(2), fast_endpoint(_base(base, api), api=api))
    assert len(results) == 2
    for result in results:
        assert result["score"] is None
        assert result["error"].startswith("malformed reply")
        assert result["attempts"] == 1, "a malformed 200 reply is not retried"
        assert isinstance(result["raw"], str)
    body = GARBAGE[kind]
    if isinstance(body, Raw) and body.body:
        assert results[0]["raw"] == body.encoded().decode()
    summary = summarize_llm(results)
    assert (summary["llm_failed"], summary["llm_unparsable"], summary["llm_scored"]) == (2, 0, 0)
    assert summary["llm_score_mean"] is None


def test_raw_reply_text_is_truncated_to_500_chars() -> None:
    fake = FakeJudge(respond_if=lambda prompt: (200, Raw("x" * 5000)))
    with serve(fake.openai) as base:
        [result] = judge_records(numbered_records(1), fast_endpoint(f"{base}/v1"))
    assert result["raw"] == "x" * 500 and result["score"] is None


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_timeout_on_every_attempt_gives_error_in_place(api: str) -> None:
    fake = FakeJudge(answer="90", delay_if=lambda prompt: item_number(prompt) == 1, delay_s=1.5)
    with serve(getattr(fake, api)) as base:
        endpoint = fast_endpoint(_base(base, api), api=api, timeout_s=0.4, max_retries=1)
        results = judge_records(numbered_records(3), endpoint)
    assert [r["score"] for r in results] == [90, None, 90]
    timed_out = results[1]
    assert timed_out["raw"] is None and timed_out["attempts"] == 2
    assert "Timeout" in timed_out["error"]
    assert len([r for r in fake.chat_requests if item_number(r.body["messages"][0]["content"]) == 1]) == 2
    summary = summarize_llm(results)
    assert (summary["llm_failed"], summary["llm_unparsable"], summary["llm_scored"]) == (1, 0, 2)
    assert summary["llm_score_mean"] == 90


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_http_500_on_every_attempt_for_all_records(api: str) -> None:
    fake = FakeJudge(fail_if=lambda prompt: True)
    with serve(getattr(fake, api)) as base:
        results = judge_records(numbered_records(4), fast_endpoint(_base(base, api), api=api, max_retries=2))
    assert len(results) == 4 and len(fake.chat_requests) == 4 * 3
    assert all(r["score"] is None and r["raw"] is None and r["attempts"] == 3 for r in results)
    assert all(r["error"].startswith("HTTP 500") for r in results)
    assert summarize_llm(results) == {
        "llm_score_mean": None,
        "llm_scored": 0,
        "llm_total": 4,
        "llm_failed": 4,
        "llm_unparsable": 0,
    }


# Record number -> behaviour of the stand-in server in the mixed test.
MIXED = {
    0: "ok",
    1: "non-json",
    2: "timeout",
    3: "unparsable",
    4: "http-500",
    5: "json-without-fields",
    6: "ok",
    7: "timeout",
    8: "non-json",
    9: "unparsable",
}


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_mixed_failures_in_one_call_are_counted_per_kind(api: str) -> None:
    def respond(prompt: str):
        kind = MIXED[item_number(prompt)]
        if kind == "non-json":
            return 200, Raw(f"garbage for item-{item_number(prompt)}")
        if kind == "json-without-fields":
            return 200, {"unexpected": item_number(prompt)}
        return None

    def answer(prompt: str) -> str:
        number = item_number(prompt)
        return "no idea" if MIXED[number] == "unparsable" else f"Score: {10 * number}/100"

    fake = FakeJudge(
        answer=answer,
        fail_if=lambda prompt: MIXED[item_number(prompt)] == "http-500",
        delay_if=lambda prompt: MIXED[item_number(prompt)] == "timeout",
        delay_s=1.5,
        respond_if=respond,
    )
    records = numbered_records(len(MIXED))
    with serve(getattr(fake, api)) as base:
        endpoint = fast_endpoint(_base(base, api), api=api, timeout_s=0.4, max_retries=1)
        results = judge_records(records, endpoint)

    assert len(results) == len(records)
    for number, (kind, result) in enumerate(zip(MIXED.values(), results)):
        if kind == "ok":
            assert result == {"score": 10 * number, "raw": f"Score: {10 * number}/100",
                              "error": None, "attempts": 1}
            continue
        assert result["score"] is None, kind
        if kind == "unparsable":
            assert result == {"score": None, "raw": "no idea", "error": None, "attempts": 1}
        elif kind == "non-json":
            assert result["raw"] == f"garbage for item-{number}", "raw text identifies the record"
            assert result["error"].startswith("malformed reply") and result["attempts"] == 1
        elif kind == "json-without-fields":
            assert f'"unexpected": {number}' in result["raw"]
            assert result["error"].startswith("malformed reply") and result["attempts"] == 1
        elif kind == "timeout":
            assert result["raw"] is None and "Timeout" in result["error"]
            assert result["attempts"] == 2
        else:
            assert result["raw"] is None and result["error"].startswith("HTTP 500")
            assert result["attempts"] == 2

    # 2 ok, 2 unparsable, 6 failed (2 non-JSON, 1 JSON without fields, 2 timeouts, 1 HTTP 500).
    assert summarize_llm(results) == {
        "llm_score_mean": (0 + 60) / 2,
        "llm_scored": 2,
        "llm_total": 10,
        "llm_failed": 6,
        "llm_unparsable": 2,
    }
