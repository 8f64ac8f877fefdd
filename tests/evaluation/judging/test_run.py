import pytest

from llm_finetune.evaluation.judging.run import check_judges, normalize_rows, run_judges
from tests.evaluation.judging.fake_servers import FakeJudge, serve

REFERENCE = {"reference": {"exact_match_rows": "auto", "max_reference_words": 4}}


def test_normalize_rows_fills_the_optional_fields_and_names_bad_rows():
    rows = normalize_rows([{"instruction": "Add.", "input": "2 + 3", "output": "5", "model_response": "5"}], "f.json")
    assert rows[0]["family"] is None and rows[0]["verifiable"] is None
    assert rows[0]["prompt_input"].endswith("### Instruction:\nAdd.\n\n### Input:\n2 + 3")
    with pytest.raises(ValueError, match=r"f.json: row 1 field 'output' is missing or not a string"):
        normalize_rows([rows[0], {"instruction": "x", "model_response": "y"}], "f.json")


def test_several_judges_at_once_each_add_columns_and_counts():
    judge = FakeJudge(answer="Score: 90/100")
    rows = normalize_rows([{"instruction": "Capital of France?", "output": "Paris", "model_response": answer}
                           for answer in ("Paris", "Lyon")], "mem")
    with serve(judge.openai) as url:
        params = REFERENCE | {"llm": {"api": "openai", "url": url + "/v1", "model": "judge-model", "api_key_env": None}}
        assert check_judges(params, {}, {})["llm"]["model"] == "judge-model"
        judged, summary = run_judges(rows, params, {}, None)
    assert [row["exact_match"] for row in judged] == [True, False]
    assert [row["llm_score"] for row in judged] == [90, 90]
    assert summary["exact_match"] == 0.5 and summary["llm_scored"] == 2 and summary["llm_total"] == 2
    assert {"rouge_1", "rouge_2", "rouge_l", "bleu_4"} <= set(judged[0])


def test_check_judges_rejects_what_cannot_run():
    with pytest.raises(ValueError, match="rm"):
        check_judges({"reward_model": {"path": "x"}}, {}, {})
    with pytest.raises(ValueError, match="needs `path`"):
        check_judges({"local": {"batch_size": 2}}, {}, {})
    with pytest.raises(KeyError, match="not in the model registry"):
        check_judges({"local": {"model": "nope"}}, {}, {})
