"""`kedro run --pipeline eval`: judge an existing responses file without training."""

import json

import pytest

from tests.evaluation.judging.fake_servers import FakeJudge, serve
from tests.pipelines.test_sft_e2e import kedro, latest, project  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e


def test_eval_judges_the_demo_responses_with_reference_metrics(project):  # noqa: F811
    result = kedro(project, "run", "--pipeline", "eval")
    assert result.returncode == 0, result.stdout[-4000:]
    judged = latest(project, "data/07_model_output/eval/file_judgments.jsonl")
    source = json.loads((project / "data/01_raw/demo_responses.json").read_text())
    assert len(judged) == len(source) == 40
    summary = latest(project, "data/08_reporting/eval/summary_metrics.json")["responses"]
    exact = [row for row in source if row["verifiable"]]
    expected = sum(r["model_response"] == r["output"] for r in exact) / len(exact)
    assert summary["exact_match"] == pytest.approx(expected)
    assert (project / "data/08_reporting/eval/report.md").is_dir()


def test_eval_through_an_ollama_server_counts_every_judgement(project):  # noqa: F811
    judge = FakeJudge(answer=lambda prompt: "Score: 72/100" if "Sure!" in prompt else "The answer is 100.")
    with serve(judge.ollama) as base_url:
        result = kedro(project, "run", "--pipeline", "eval",
                       params={"judge.llm.api": "ollama", "judge.llm.url": base_url, "judge.llm.model": "judge-model"})
    assert result.returncode == 0, result.stdout[-4000:]
    judged = latest(project, "data/07_model_output/eval/file_judgments.jsonl")
    assert {row["llm_score"] for row in judged} == {72, 100}
    summary = latest(project, "data/08_reporting/eval/summary_metrics.json")["responses"]
    assert summary["llm_total"] == summary["llm_scored"] == 40
    assert summary["score_stats"]["llm"]["n_scored"] == 40
    assert all(request.body["stream"] is False for request in judge.chat_requests)


def test_a_responses_file_without_model_response_is_named_with_its_row(project, tmp_path):  # noqa: F811
    bad = tmp_path / "responses.json"
    bad.write_text(json.dumps([{"instruction": "a", "output": "b", "model_response": "b"},
                               {"instruction": "c", "output": "d"}]))
    result = kedro(project, "run", "--pipeline", "eval", params={"eval.responses.path": str(bad)})
    assert result.returncode != 0
    assert f"{bad}: row 1 field 'model_response' is missing or not a string" in result.stdout


@pytest.mark.llm_server
@pytest.mark.timeout(1800)
def test_eval_pipeline_with_a_real_llama_cpp_judge(project):  # noqa: F811
    """`kedro run --pipeline eval` judged by llama.cpp's own server (xllamacpp) serving SmolLM2."""
    pytest.importorskip("xllamacpp", reason="xllamacpp is not installed (pip install -e '.[test]')")
    import httpx

    from tests.evaluation.judging.llamacpp_server import llamacpp_server, smollm2_gguf

    with llamacpp_server(smollm2_gguf(), n_ctx=2048, n_threads=2, n_parallel=1) as base_url:
        model_id = httpx.get(f"{base_url}/v1/models", timeout=60).json()["data"][0]["id"]
        params = {"eval.responses.max_rows": 6, "judge.llm.api": "openai", "judge.llm.url": f"{base_url}/v1",
                  "judge.llm.model": model_id, "judge.llm.concurrency": 1, "judge.llm.timeout_s": 900}
        result = kedro(project, "run", "--pipeline", "eval", params=params)
    assert result.returncode == 0, result.stdout[-4000:]
    judged = latest(project, "data/07_model_output/eval/file_judgments.jsonl")
    assert len(judged) == 6 and all(isinstance(row["llm_raw"], str) and row["llm_error"] is None for row in judged)
    summary = latest(project, "data/08_reporting/eval/summary_metrics.json")["responses"]
    assert summary["llm_total"] == 6 and summary["llm_scored"] + summary["llm_unparsable"] == 6
