"""The deferrable trigger: JSON-only arguments without the key, one event with the response or the error."""

from __future__ import annotations

import asyncio
import json

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
