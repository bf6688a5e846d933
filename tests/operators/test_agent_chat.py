"""AgentChatCompletionOperator in this process: invalid input fails before any request, parse-time checks, a
light import, ``on_kill``. The runs under real Airflow are in integration/test_operator.py."""

from __future__ import annotations

import pytest
from fakes import Imported, import_in_fresh_python

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator
from airflow_agentchat.request_body import BODY_FIELDS

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
    imported = import_in_fresh_python("import airflow_agentchat.operators.agent_chat")
    heavy = ("airflow_agentchat.models", "airflow_agentchat.hooks.agent_chat", "httpx_aiohttp", "httpx_sse", "aiohttp")
    assert Imported.matching(imported.loaded, heavy) == []


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
