"""AgentChatCompletionOperator with real Airflow (`airflow dags test`) against the dev server."""

from __future__ import annotations

import pytest

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator
from airflow_agentchat.request_body import BODY_FIELDS

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


def test_a_deferred_decorated_task_carries_what_the_function_returned(devserver, make_conn):
    """The triggerer keeps the defer ``kwargs`` beside the event: the function's answer travels, it runs once."""
    import asyncio

    from airflow.sdk import task
    from airflow.sdk.exceptions import TaskDeferred

    make_conn("agentchat_default", devserver.url, allow_insecure_http=True)
    calls: list[str] = []

    @task.agent_chat(deferrable=True)
    def ask(city: str) -> str:
        calls.append(city)
        return f"Weather in {city}?"

    with pytest.raises(TaskDeferred) as deferred:
        ask("Oslo").operator.execute({})
    assert deferred.value.kwargs == {"returned": "Weather in Oslo?"}

    async def first_event(trigger):
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event(deferred.value.trigger))
    pushed: dict = {}
    ti = type("TI", (), {"xcom_push": lambda self, key, value: pushed.__setitem__(key, value)})()
    resumed = ask("Oslo").operator  # a new instance, as after the resume: it has not called the function
    assert resumed.execute_complete({"ti": ti}, event, **deferred.value.kwargs) == "Echo: Weather in Oslo?"
    assert calls == ["Oslo"] and pushed["usage"]["total_tokens"] > 0


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


# ----------------------------------------------------------------------------------------- in-process units


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": "x", "temperature": 9}, "temperature"),
        ({"messages": '[{"role": "user"', "prompt": None}, "messages"),
        ({"request": "[1, 2]"}, "request"),
        ({}, "messages"),
        ({"prompt": "x", "tools": '[{"type": "function", "function": {"name": "bad name"}}]'}, "tools[0]"),
        ({"prompt": "x", "top_logprobs": 3}, "top_logprobs"),
        # A typo in request= is refused like the same typo as a keyword (it used to travel as extra_body).
        ({"prompt": "x", "request": {"temprature": 0.2}}, "request.temprature"),
        ({"prompt": "x", "request": {"extra_body": "oops"}}, "request.extra_body"),
        ({"prompt": "x", "extra_body": "[1]"}, "extra_body"),
        ({"prompt": "x", "logprobs": "yes"}, "logprobs"),
        ({"prompt": "lone \ud800 surrogate"}, "messages[0].content"),
        ({"prompt": "x", "metadata": {"k": "\udfff"}}, "metadata.k"),
    ],
)
def test_invalid_input_fails_before_any_request(scripted, make_conn, kwargs, field):
    scripted.script()
    operator = AgentChatCompletionOperator(
        task_id="t", agentchat_conn_id=make_conn("op_invalid", scripted.url), **kwargs
    )
    with pytest.raises(InvalidRequestError, match=field.replace("[", r"\[")):
        operator.execute({})
    assert scripted.requests == []


def test_a_typo_in_request_gets_a_suggestion():
    operator = AgentChatCompletionOperator(task_id="t", prompt="x", request={"temprature": 0.2})
    with pytest.raises(InvalidRequestError, match="did you mean 'temperature'"):
        operator.build_body()


@pytest.mark.parametrize("text", ["true", "false"])
def test_templated_boolean_text_is_accepted(text):
    from airflow_agentchat.models import build_request

    request = build_request([{"role": "user", "content": "x"}], logprobs=text, provide_citations=text)
    assert request.logprobs is (text == "true") and request.to_body()["provide_citations"] is (text == "true")


def test_body_fields_are_checked_without_a_conversation():
    """What a batch's items share is checked as fields: every rule except those about messages."""
    from airflow_agentchat.models import build_fields

    tools = [{"type": "function", "function": {"name": "f"}}]
    fields = build_fields(temperature=0.2, tools=tools, tool_choice={"type": "function", "function": {"name": "f"}})
    assert fields.temperature == 0.2 and fields.tool_choice.function.name == "f"
    with pytest.raises(InvalidRequestError) as info:
        build_fields(temperature=9, stop=[])
    assert sorted(field for field, _ in info.value.errors) == ["stop", "temperature"]
    with pytest.raises(InvalidRequestError, match="tool_choice names function 'g'"):
        build_fields(tools=tools, tool_choice={"type": "function", "function": {"name": "g"}})
    with pytest.raises(InvalidRequestError, match=r"metadata\.k"):
        build_fields(metadata={"k": "\udfff"})


def test_unknown_output_mode_is_refused_at_parse_time():
    with pytest.raises(ValueError, match="output must be one of"):
        AgentChatCompletionOperator(task_id="t", prompt="x", output="everything")


def test_body_fields_match_the_request_model():
    from airflow_agentchat.models import ChatCompletionRequest

    assert set(BODY_FIELDS) == set(ChatCompletionRequest.model_fields) - {"messages"}
    assert set(BODY_FIELDS) <= set(AgentChatCompletionOperator.template_fields)


def test_importing_the_operator_stays_light():
    """DAG parsing imports the operator: it must not pull in the models, the hook or an HTTP transport."""
    import subprocess
    import sys

    code = (
        "import sys, airflow.sdk, airflow_agentchat.operators.agent_chat\n"
        "heavy = [m for m in ('airflow_agentchat.models', 'airflow_agentchat.hooks.agent_chat', 'httpx_aiohttp',"
        " 'httpx_sse', 'aiohttp') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_on_kill_aborts_the_request_in_flight(devserver, make_conn):
    """A killed task must stop waiting at once (and not retry), not when the agent finally answers."""
    import threading

    from airflow_agentchat.exceptions import AgentChatConnectionError

    conn_id = make_conn("kill", devserver.url)
    operator = AgentChatCompletionOperator(
        task_id="t", agentchat_conn_id=conn_id, prompt="slow [[latency:20000]]", max_retries=3
    )
    threading.Timer(0.5, operator.on_kill).start()
    # Had the request survived, the answer would arrive after 20 s and execute would get past the request.
    with pytest.raises(AgentChatConnectionError) as info:
        operator.execute({})
    assert info.value.attempts == 1  # cancelled requests are not retried


def test_on_kill_during_a_retry_wait_sends_nothing_more(scripted, make_conn):
    """Killed while waiting out a retry-after: no further (paid) request, and the task fails."""
    import threading

    from airflow_agentchat.exceptions import AgentChatConnectionError

    ok = (200, {}, b'{"choices": [{"message": {"content": "late"}, "finish_reason": "stop"}]}')
    scripted.script((503, {"retry-after": "30"}, b"busy"), ok)
    operator = AgentChatCompletionOperator(task_id="t", agentchat_conn_id=make_conn("kill2", scripted.url), prompt="x")
    threading.Timer(0.5, operator.on_kill).start()
    with pytest.raises(AgentChatConnectionError, match="cancelled"):
        operator.execute({})
    assert len(scripted.requests) == 1


def test_deferrable_follows_the_default_deferrable_setting(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert AgentChatCompletionOperator(task_id="a", prompt="x").deferrable is True
    assert AgentChatCompletionOperator(task_id="b", prompt="x", deferrable=False).deferrable is False
