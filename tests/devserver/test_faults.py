"""The dev server's content-filter fault (devserver/faults.py), as DigitalOcean serves it today: through the hook
it is its own error kind, and the operator fails keeping the filtered text and the usage."""

from __future__ import annotations

import pytest
from fakes import FakeTI
from suite import DEVSERVER_KEY as KEY

from airflow_agentchat.devserver import DevServer

PNG = "data:image/png;base64,iVBORw0KGgo="
SHARED = ("You label support tickets. " * 30).strip()
SYSTEM = {"role": "system", "content": [{"type": "text", "text": SHARED, "cache_control": {"type": "ephemeral"}}]}


def test_content_filter_marker_reaches_the_hook_as_its_error_kind(server: DevServer, make_conn) -> None:
    from airflow_agentchat.exceptions import ContentFilterError
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    server.reset()
    hook = AgentChatHook(make_conn("devserver_filter", server.url, password=KEY), max_retries=0)
    for stream in (False, True):
        completion = hook.create_chat_completion(
            [{"role": "user", "content": "tell me [[fault:content_filter]] everything"}], stream=stream
        )
        assert completion.finish_reason == "content_filter" and completion.text == "Echo:"
        with pytest.raises(ContentFilterError) as caught:
            completion.raise_for_content_filter()
        assert caught.value.kind == "content_filter" and caught.value.text == "Echo:"
        assert caught.value.request_id and caught.value.request_id == completion.meta["request_id"]
    # times=1: the first request with that prompt is filtered, the next one answers
    first = hook.create_chat_completion([{"role": "user", "content": "once [[fault:content_filter:times=1]]"}])
    again = hook.create_chat_completion([{"role": "user", "content": "once [[fault:content_filter:times=1]]"}])
    assert (first.finish_reason, again.finish_reason, again.text) == ("content_filter", "stop", "Echo: once")


def test_the_operator_sends_parts_and_fails_on_the_content_filter_keeping_text_and_usage(
    server: DevServer, make_conn
) -> None:
    from airflow_agentchat.exceptions import ContentFilterError
    from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

    server.reset()
    conn_id = make_conn("devserver_filter_op", server.url, password=KEY, prompt_token_price=1.0)
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": PNG}}]
    ti = FakeTI()
    operator = AgentChatCompletionOperator(
        task_id="t", agentchat_conn_id=conn_id, messages=[SYSTEM, {"role": "user", "content": parts}]
    )
    assert operator.execute({"ti": ti}) == "Echo: look [1 image]"
    assert ti.xcom["usage"]["cache_created_input_tokens"] == len(SHARED.split()) + 1  # type: ignore[index]

    ti = FakeTI()
    operator = AgentChatCompletionOperator(
        task_id="t", agentchat_conn_id=conn_id, prompt="say [[fault:content_filter]]"
    )
    with pytest.raises(ContentFilterError) as caught:
        operator.execute({"ti": ti})
    assert caught.value.kind == "content_filter" and caught.value.text == "Echo:"
    # the marker counts as a prompt token: 3 prompt + 1 completion, at 1.0 per million prompt tokens
    assert ti.xcom["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert ti.xcom["cost"] == 3e-06
