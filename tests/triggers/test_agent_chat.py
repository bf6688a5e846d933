"""The deferrable trigger: JSON-only arguments without the key, one event with the response or the error."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_agentchat.triggers.agent_chat import AgentChatCompletionTrigger

BODY = {
    "model": "agent",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.1,
    "extra_body": {"vendor_x": 1},
}


def run_trigger(trigger: AgentChatCompletionTrigger) -> list[dict]:
    async def collect() -> list[dict]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def test_serialized_arguments_are_plain_json_without_the_key(make_conn, devserver, canary_key):
    trigger = AgentChatCompletionTrigger(make_conn("trig", devserver.url), BODY, timeout=5, max_retries=0)
    path, kwargs = trigger.serialize()
    assert path == "airflow_agentchat.triggers.agent_chat.AgentChatCompletionTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert canary_key not in json.dumps(kwargs)
    assert AgentChatCompletionTrigger(**kwargs).serialize() == (path, kwargs)


def test_success_event_carries_the_response(make_conn, devserver):
    (event,) = run_trigger(AgentChatCompletionTrigger(make_conn("trig", devserver.url), BODY))
    assert event["status"] == "success"
    assert event["response"]["choices"][0]["message"]["content"] == "Echo: hi"
    assert event["meta"]["attempts"] == 1
    json.dumps(event)  # no pickle: the event is JSON


def test_error_event_names_the_problem_without_the_key(make_conn, scripted, canary_key):
    scripted.script((401, {}, json.dumps({"error": {"message": f"bad key {canary_key}"}}).encode()))
    (event,) = run_trigger(AgentChatCompletionTrigger(make_conn("trig", scripted.url), BODY, max_retries=0))
    assert event["status"] == "error" and "HTTP 401" in event["message"]
    assert canary_key not in json.dumps(event)
    assert json.loads(scripted.requests[0].body)["vendor_x"] == 1


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


FAILURES = {
    "401": ((401, {"x-request-id": "rid-401"}, b'{"error": {"message": "bad key", "code": "invalid_api_key"}}'), 0),
    "404": ((404, {}, b'{"detail": "Not Found"}'), 0),
    "429": ((429, {"x-request-id": "rid-429"}, b'{"error": {"message": "slow down", "code": "rate_limit"}}'), 0),
    "503 twice": ((503, {"retry-after-ms": "10"}, b"<html><title>busy</title></html>"), 1),
    "refused": (None, 0),
}


@pytest.mark.parametrize("failure", list(FAILURES), ids=list(FAILURES))
def test_deferred_task_raises_the_same_error_as_a_direct_one(scripted, make_conn, canary_key, failure):
    """The triggerer's error comes back as its own class with its fields, not as a plain AgentChatError."""
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_agentchat.exceptions import AgentChatError
    from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

    reply, max_retries = FAILURES[failure]
    conn_id = make_conn("same", scripted.url if reply is not None else _closed_port_url())

    def operator(deferrable: bool) -> AgentChatCompletionOperator:
        scripted.script(*[reply] * (max_retries + 1) if reply is not None else [])
        return AgentChatCompletionOperator(
            task_id="t", agentchat_conn_id=conn_id, prompt="hi", max_retries=max_retries, deferrable=deferrable
        )

    with pytest.raises(AgentChatError) as direct:
        operator(deferrable=False).execute({})
    deferred_operator = operator(deferrable=True)
    with pytest.raises(TaskDeferred) as deferral:
        deferred_operator.execute({})
    (event,) = run_trigger(deferral.value.trigger)
    assert canary_key not in json.dumps(event)
    with pytest.raises(AgentChatError) as deferred:
        deferred_operator.execute_complete({}, event)

    fields = ("status", "code", "request_id", "message", "retryable", "attempts", "kind")
    assert type(deferred.value) is type(direct.value)
    assert {f: getattr(deferred.value, f, None) for f in fields} == {f: getattr(direct.value, f, None) for f in fields}
    assert direct.value.attempts == max_retries + 1


def test_the_deferral_has_a_timeout_from_the_hooks_bound(make_conn, scripted):
    """A trigger may not wait forever: the operator defers with the longest time the request can take."""
    from datetime import timedelta

    from airflow.sdk.exceptions import TaskDeferred

    from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

    conn_id = make_conn("bounded", scripted.url, attempt_deadline=30)
    operator = AgentChatCompletionOperator(
        task_id="t", agentchat_conn_id=conn_id, prompt="hi", timeout=10, max_retries=2, deferrable=True
    )
    with pytest.raises(TaskDeferred) as deferral:
        operator.execute({})
    assert deferral.value.timeout == timedelta(seconds=3 * 30 + 2 * 120)
    assert operator.hook.request_deadline() == 3 * 30 + 2 * 120
