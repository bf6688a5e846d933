"""AgentChatCompletionOperator with real Airflow (``airflow dags test``) against the dev server: one run of the
cases DAG, each test checks its tasks."""

from __future__ import annotations

import pytest

DATE = "2026-03-04"


@pytest.fixture(scope="module")
def cases(run_dag) -> dict:
    return run_dag("agentchat_operator_cases", DATE)


def rv(cases: dict, task_id: str, key: str = "return_value"):
    return cases[(task_id, -1, key)]


def test_jinja_prompt_renders_params_and_dates(cases):
    assert rv(cases, "jinja_prompt") == f"Echo: Hello Ada, today is {DATE}"


def test_messages_file_is_rendered_with_the_context(cases):
    assert rv(cases, "messages_file") == f"Echo: Report for {DATE} for ops"
    assert rv(cases, "messages_file", "usage")["prompt_tokens"] > 0


def test_request_file_drops_in_and_keywords_override(cases):
    response = rv(cases, "request_file", "response")
    assert rv(cases, "request_file") == "Echo: Request file for ops"
    assert response["model"] == "model-from-request"


def test_request_dict_with_prompt_appended(cases):
    assert rv(cases, "request_dict") == "Echo: and"  # max_tokens=2 from the request body cuts the answer
    assert rv(cases, "request_dict", "response")["choices"][0]["finish_reason"] == "length"
    assert rv(cases, "request_dict", "response")["model"] == "dict-model"


def test_only_messages_and_request_name_files(cases):
    """A prompt ending in .json is text, and a stop sequence that looks like JSON stays a string."""
    assert rv(cases, "text_like_a_file") == "Echo: Describe the fields of orders.json for ops"


def test_n_two_returns_a_list(cases):
    assert rv(cases, "n_two") == ["Echo: twice", "Echo 1: twice"]


def test_output_modes(cases):
    assert rv(cases, "output_message") == {"role": "assistant", "content": "Echo: message please"}
    response = rv(cases, "output_response")
    assert response["choices"][0]["message"]["content"] == "Echo: response please"
    assert response == rv(cases, "output_response", "response")
    assert rv(cases, "output_response", "usage") == response["usage"]


def test_tool_calls_come_back_in_the_message(cases):
    message = rv(cases, "tools_message")
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "lookup" and call["id"]
    assert rv(cases, "tools_message", "response")["choices"][0]["finish_reason"] == "tool_calls"


def test_streaming_pushes_folded_text_and_usage(cases):
    assert rv(cases, "streamed") == "Echo: stream this answer"
    usage = rv(cases, "streamed", "usage")
    assert (
        usage["completion_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    )
    assert "│ Echo: stream this answer" in cases["_log"]


def test_deferrable_runs_in_the_trigger(cases):
    assert rv(cases, "deferred") == "Echo: wait in the triggerer"
    assert rv(cases, "deferred", "usage")["total_tokens"] > 0


def test_do_extras_are_in_the_response(cases):
    response = rv(cases, "do_extras")
    assert response["retrieval"]["retrieved_data"]
    assert "guardrails" in response


def test_prompt_from_xcom_and_decorator(cases):
    assert rv(cases, "xcom_prompt") == "Echo: prompt from an upstream task"
    assert rv(cases, "decorated") == "Echo: Decorated: prompt from an upstream task"


def test_a_deferred_decorated_task_resumes_with_its_prompt(cases):
    """The resumed instance never called the function: its prompt comes with the resume."""
    assert rv(cases, "decorated_deferred") == "Echo: Deferred: prompt from an upstream task"
    assert rv(cases, "decorated_deferred", "usage")["total_tokens"] > 0


def test_every_task_logs_one_usage_line(cases):
    assert cases["_log"].count("Agent chat completion:") >= 12


def test_the_key_stays_out_of_logs_xcom_and_rendered_fields(cases, canary_key, airflow_db):
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    assert canary_key not in cases["_log"]
    assert canary_key not in repr({k: v for k, v in cases.items() if k != "_log"})
    with create_session() as session:
        rendered = session.query(RenderedTaskInstanceFields).filter_by(dag_id="agentchat_operator_cases").all()
        assert rendered
        assert canary_key not in repr([r.rendered_fields for r in rendered])
    task_logs = "".join(p.read_text(errors="replace") for p in (airflow_db / "logs").rglob("*") if p.is_file())
    assert canary_key not in task_logs
