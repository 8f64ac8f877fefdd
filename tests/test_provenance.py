"""Secrets in URLs never reach MLflow, the stored preflight report or an error message."""

from types import SimpleNamespace

import pytest

from llm_finetune.hooks import ParameterCheckHook
from llm_finetune.provenance import redact_url, url_secrets

SECRET = "sk-live-0123456789"
NO_RUNTIME = SimpleNamespace(runtime_params={})  # a run given no --params


@pytest.mark.parametrize("url, shown", [
    (f"https://user:{SECRET}@judge.example.com/v1", "https://***@judge.example.com/v1"),
    (f"https://host/data.json?token={SECRET}&split=train", "https://host/data.json?token=***&split=train"),
    ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
])
def test_redact_url_hides_userinfo_and_secret_query_values(url, shown):
    assert redact_url(url) == shown


def test_a_url_with_credentials_stops_the_run_before_kedro_mlflow_logs_the_parameters():
    """Before, judge.llm.url = https://user:key@host/v1 went to MLflow params and preflight_report.json."""
    params = {"judge": {"llm": {"api": "openai", "url": f"https://user:{SECRET}@judge.example.com/v1"}},
              "data": {"datasets": ["demo_instructions"]}}
    assert url_secrets(params) == ["judge.llm.url = https://***@judge.example.com/v1"]
    with pytest.raises(ValueError, match=r"judge.llm.url = https://\*\*\*@judge.example.com/v1") as error:
        ParameterCheckHook().after_context_created(SimpleNamespace(params=params, config_loader=NO_RUNTIME))
    assert SECRET not in str(error.value)
    ParameterCheckHook().after_context_created(SimpleNamespace(params={"judge": {"llm": None}},
                                                               config_loader=NO_RUNTIME))  # no URL: no complaint


def test_the_judge_report_and_errors_show_the_url_without_its_secret():
    from llm_finetune.evaluation.judging.llm_judge import JudgeEndpoint, JudgeEndpointError, check_endpoint
    from tests.evaluation.judging.fake_servers import closed_port_url

    url = closed_port_url().replace("http://", f"http://user:{SECRET}@") + "/v1"
    endpoint = JudgeEndpoint(url=url, model="judge", api="openai", timeout_s=1, max_retries=0)
    with pytest.raises(JudgeEndpointError) as error:
        check_endpoint(endpoint)
    assert SECRET not in str(error.value) and "***@" in str(error.value)


def test_checkpoint_keys_follow_the_world_size_not_the_rendezvous():
    from llm_finetune.provenance import checkpoint_key
    from llm_finetune.training.settings import train_settings

    def key(params):
        return checkpoint_key({"train": "t"}, {"fingerprint": "f"}, train_settings(params).as_params())

    two = key({"distributed": {"processes": 2}})
    assert two == key({"distributed": {"processes": 2, "master_port": 29999, "launcher": "accelerate"}})
    assert two != key({"distributed": {"processes": 4}}) != key({})
    assert key({}) == key({"trainer_args": {}, "resume": True})  # bookkeeping and unset keys leave the key alone
    assert key({}) != key({"trainer_args": {"ddp_timeout": 60}})
