"""``@task.agent_chat`` (decorators/agent_chat.py) in this process against a scripted server: what the function
returns (a prompt, messages or a request dict) is what is sent, with the function's arguments and the context."""

from __future__ import annotations

import json

import pytest
from fakes import FakeTI

from airflow_agentchat.decorators.agent_chat import _AgentChatDecoratedOperator

ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def run(scripted, make_conn, function, **kwargs) -> tuple[object, dict]:
    scripted.script((200, {"content-type": "application/json"}, json.dumps(ANSWER).encode()))
    operator = _AgentChatDecoratedOperator(
        task_id="deco", python_callable=function, agentchat_conn_id=make_conn("deco", scripted.url), **kwargs
    )
    result = operator.execute({"ti": FakeTI(), "ds": "2026-02-03"})
    return result, json.loads(scripted.requests[0].body)


def test_a_returned_string_is_the_prompt_after_the_system_prompt(scripted, make_conn):
    def ask(topic: str, ds=None) -> str:
        return f"Summarise {topic} for {ds}."

    result, body = run(scripted, make_conn, ask, op_args=["sales"], system_prompt="Be brief.")
    assert result == "Done."
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarise sales for 2026-02-03."},
    ]


def test_returned_messages_are_the_conversation(scripted, make_conn):
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    _, body = run(scripted, make_conn, lambda: [*conversation, {"role": "user", "content": "and now?"}])
    assert body["messages"] == [*conversation, {"role": "user", "content": "and now?"}]


def test_a_returned_dict_is_the_request_body_and_keywords_still_apply(scripted, make_conn):
    request = {"messages": [{"role": "user", "content": "q"}], "temperature": 0.9, "top_p": 0.5}
    _, body = run(scripted, make_conn, lambda: request, temperature=0.1)
    assert body["messages"] == request["messages"] and body["temperature"] == 0.1 and body["top_p"] == 0.5


def test_anything_else_is_refused_naming_its_type_before_any_request(scripted, make_conn):
    scripted.script()
    operator = _AgentChatDecoratedOperator(
        task_id="deco", python_callable=lambda: 42, agentchat_conn_id=make_conn("deco", scripted.url)
    )
    with pytest.raises(TypeError, match="return a prompt string, a list of messages or a request dict, not int"):
        operator.execute({"ti": FakeTI()})
    assert scripted.requests == []


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
    ti = FakeTI()
    resumed = ask("Oslo").operator  # a new instance, as after the resume: it has not called the function
    assert resumed.execute_complete({"ti": ti}, event, **deferred.value.kwargs) == "Echo: Weather in Oslo?"
    assert calls == ["Oslo"] and ti.xcom["usage"]["total_tokens"] > 0
