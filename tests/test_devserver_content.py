"""The dev server and the endpoint as DigitalOcean serves it today: content parts (through the official ``openai``
SDK, an independent client), the prompt cache's usage, and the content filter (through the hook to the error
kind)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from fakes import FakeTI

from airflow_agentchat.devserver import DevServer

KEY = "devserver-content-key"
PNG = "data:image/png;base64,iVBORw0KGgo="
SHARED = ("You label support tickets. " * 30).strip()
SYSTEM = {"role": "system", "content": [{"type": "text", "text": SHARED, "cache_control": {"type": "ephemeral"}}]}


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture()
def client(server: DevServer) -> openai.OpenAI:
    server.reset()
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=10)


def test_the_openai_sdk_sends_parts_and_the_echo_counts_the_images(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in"},
                    {"type": "text", "text": " these pictures?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            },
        ],
    )
    assert answer.choices[0].message.content == "Echo: What is in these pictures? [2 images]"
    # text parts count like string content: system 2 tokens + 1, user 5 tokens + 1
    assert answer.usage is not None and answer.usage.prompt_tokens == 9
    assert getattr(answer.usage, "cache_read_input_tokens", None) is None  # no cache_control, no cache fields


def test_one_image_and_a_video_streamed(client: openai.OpenAI) -> None:
    content = [
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}},
    ]
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": content}],
        stream=True,  # type: ignore[list-item]
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Echo: [1 image, 1 video]"


def test_a_bad_part_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m",
            messages=[
                {"role": "system", "content": "s"},
                {"role": "user", "content": ["a", "b", {"type": "image_url", "image_url": {"url": "file:///x.png"}}]},
            ],  # type: ignore[list-item]
        )
    assert caught.value.body["param"] == "messages[1].content[2].image_url.url"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]\.content\[0\]\.type: image_url parts"):
        client.chat.completions.create(
            model="m",
            messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}],  # type: ignore[list-item]
        )


def test_the_same_cached_prefix_is_read_within_its_lifetime(server: DevServer, client: openai.OpenAI) -> None:
    def ask(prompt: str, system: dict = SYSTEM) -> dict:
        answer = client.chat.completions.create(
            model="m",
            messages=[system, {"role": "user", "content": prompt}],  # type: ignore[list-item]
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [chunk.usage for chunk in answer if chunk.usage is not None]
        return usage[-1].model_dump()

    prefix = 30 * 4 + 1  # the system text's tokens plus one
    first = ask("ticket one")
    assert first["prompt_tokens"] == prefix + 3
    assert (first["cache_created_input_tokens"], first["cache_read_input_tokens"]) == (prefix, 0)
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": prefix, "ephemeral_1h_input_tokens": 0}
    second = ask("ticket two, longer")
    assert (second["cache_created_input_tokens"], second["cache_read_input_tokens"]) == (0, prefix)
    assert second["prompt_tokens"] == prefix + 4
    hour = {
        "role": "system",
        "content": [
            {**SYSTEM["content"][0], "text": "Other rules.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
    }
    third = ask("ticket three", hour)
    assert third["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 3}
    server.reset()  # the cache goes with the rest of the server's state
    assert ask("ticket four")["cache_created_input_tokens"] == prefix


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
