"""Message content (models/content.py): content parts as DigitalOcean's SDK accepts them, errors that name the
part, and the models package's public names."""

from __future__ import annotations

import json

import pytest

from airflow_agentchat.exceptions import InvalidRequestError
from airflow_agentchat.models import (
    ChatCompletion,
    ChatCompletionRequest,
    as_request_message,
    build_request,
)

PNG = "data:image/png;base64,iVBORw0KGgo="
CACHED = {"type": "text", "text": "Long shared instructions.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
VIDEO = {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}}


def user(content):
    return [{"role": "user", "content": content}]


# Accepted exactly when gradient 3.12's completion_create_params accepts the message (plus our URL rule).
VALID = {
    "text part list": user([{"type": "text", "text": "hi"}]),
    "single text part, not in a list": user({"type": "text", "text": "hi"}),
    "strings inside a part list": user(["hi", {"type": "text", "text": " there"}]),
    "empty part list": user([]),
    "cache_control without ttl": user([{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]),
    "cache_control 5m": user([{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "5m"}}]),
    "image https with detail": user(["what is this?", IMAGE]),
    "image without detail": user([{"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]),
    "image data URL": user([{"type": "image_url", "image_url": {"url": PNG, "detail": "auto"}}]),
    "single image part": user(IMAGE),
    "video https": user([VIDEO]),
    "video data URL": user([{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}]),
    "cached text on system": [{"role": "system", "content": [CACHED]}, *user("hi")],
    "cached text on developer": [{"role": "developer", "content": [CACHED]}, *user("hi")],
    "text parts on assistant": [*user("hi"), {"role": "assistant", "content": [CACHED]}, *user("again")],
    "text parts on tool": [
        *user("hi"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]},
    ],
}

# (messages, the field named, words of the rule)
INVALID = {
    "image on system": (
        [{"role": "system", "content": [IMAGE]}, *user("hi")],
        "messages[0].content[0].type",
        "only allowed on user messages",
    ),
    "video on assistant": (
        [*user("hi"), {"role": "assistant", "content": [VIDEO]}],
        "messages[1].content[0].type",
        "only allowed on user messages",
    ),
    "image on tool": (
        [{"role": "tool", "tool_call_id": "c1", "content": IMAGE}],
        "messages[0].content.type",
        "only allowed on user messages",
    ),
    "unknown part type": (user([{"type": "audio", "audio": {}}]), "messages[0].content[0].type", "must be"),
    "part without type": (user([{"text": "hi"}]), "messages[0].content[0].type", "must be"),
    "text part without text": (user([{"type": "text"}]), "messages[0].content[0].text", "Field required"),
    "text not a string": (user([{"type": "text", "text": 5}]), "messages[0].content[0].text", "valid string"),
    "extra key on a part": (
        user([{"type": "text", "text": "x", "name": "n"}]),
        "messages[0].content[0].name",
        "Extra inputs",
    ),
    "ttl 10m": (
        user([{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "10m"}}]),
        "messages[0].content[0].cache_control.ttl",
        "'5m' or '1h'",
    ),
    "cache_control type persistent": (
        user([{"type": "text", "text": "x", "cache_control": {"type": "persistent"}}]),
        "messages[0].content[0].cache_control.type",
        "ephemeral",
    ),
    "cache_control without type": (
        user([{"type": "text", "text": "x", "cache_control": {"ttl": "5m"}}]),
        "messages[0].content[0].cache_control.type",
        "Field required",
    ),
    "cache_control null": (
        user([{"type": "text", "text": "x", "cache_control": None}]),
        "messages[0].content[0].cache_control",
        "not null",
    ),
    "image without image_url": (user([{"type": "image_url"}]), "messages[0].content[0].image_url", "Field required"),
    "image_url without url": (
        user([{"type": "image_url", "image_url": {"detail": "low"}}]),
        "messages[0].content[0].image_url.url",
        "Field required",
    ),
    "detail medium": (
        user([{"type": "image_url", "image_url": {"url": "https://e.com/a.png", "detail": "medium"}}]),
        "messages[0].content[0].image_url.detail",
        "'auto', 'low' or 'high'",
    ),
    "video with detail": (
        user([{"type": "video_url", "video_url": {"url": "https://e.com/a.mp4", "detail": "low"}}]),
        "messages[0].content[0].video_url.detail",
        "Extra inputs",
    ),
    "a number in a part list": (user(["hi", 5]), "messages[0].content[1]", "string or a content part"),
    "content a number": (user(5), "messages[0].content", "string, a content part"),
}

# Media URLs: https or a base64 data URL of the part's media type; what the agent could not fetch is refused.
BAD_URLS = {
    "http": "http://example.com/cat.png",
    "file": "file:///tmp/cat.png",
    "s3": "s3://bucket/cat.png",
    "local path": "/tmp/cat.png",
    "https without host": "https:///cat.png",
    "data without base64": "data:image/png,rawbytes",
    "data of another type": "data:text/plain;base64,aGk=",
    "data without payload": "data:image/png;base64,",
}


@pytest.mark.parametrize("messages", VALID.values(), ids=VALID.keys())
def test_valid_content_parts_are_accepted_and_sent_unchanged(messages):
    request = build_request(messages)
    sent = json.loads(request.to_json())["messages"]
    assert sent == [{k: v for k, v in m.items() if v is not None} for m in messages]
    assert request.to_body()["messages"] == sent


@pytest.mark.parametrize(("messages", "field", "rule"), INVALID.values(), ids=INVALID.keys())
def test_invalid_content_parts_are_refused_naming_the_part(messages, field, rule):
    with pytest.raises(InvalidRequestError) as caught:
        build_request(messages)
    fields = dict(caught.value.errors)
    assert field in fields, caught.value.errors
    assert rule in fields[field]
    assert str(caught.value).startswith("Invalid chat completion request: ")


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_media_urls_must_be_https_or_a_data_url(url):
    messages = user(["a", "b", {"type": "image_url", "image_url": {"url": url}}])
    messages.insert(0, {"role": "system", "content": "s"})
    with pytest.raises(InvalidRequestError) as caught:
        build_request(messages)
    [(field, rule)] = caught.value.errors
    assert field == "messages[1].content[2].image_url.url"
    assert "https://" in rule or "data: URL" in rule


def test_a_video_data_url_must_carry_a_video_type():
    with pytest.raises(InvalidRequestError, match=r"content\[0\]\.video_url\.url: .*video/\*"):
        build_request(user([{"type": "video_url", "video_url": {"url": PNG}}]))


def test_every_bad_part_is_named_once_and_other_rules_still_apply():
    messages = [
        {"role": "system", "content": [IMAGE]},
        {"role": "user", "content": [{"type": "text"}, {"type": "image_url", "image_url": {"url": "http://x/y"}}]},
    ]
    with pytest.raises(InvalidRequestError) as caught:
        build_request(messages, temperature=3)
    fields = [field for field, _ in caught.value.errors]
    assert fields == [
        "messages[0].content[0].type",
        "messages[1].content[0].text",
        "messages[1].content[1].image_url.url",
        "temperature",
    ]


def test_the_string_case_keeps_its_messages():
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]: content is required"):
        build_request([{"role": "user"}])
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.role"):
        build_request([{"role": "robot", "content": [IMAGE]}])


def test_the_schema_describes_content_parts():
    schema = json.dumps(ChatCompletionRequest.model_json_schema())
    assert "image_url" in schema and "cache_control" in schema and "video_url" in schema


def test_assistant_messages_keep_their_parts_in_a_tool_round_trip():
    answer = ChatCompletion.model_validate(
        {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": [{"type": "text", "text": "Let me look.", "annotations": []}],
                        "tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    assert answer.text == "Let me look."
    back = as_request_message(answer.to_dict()["choices"][0]["message"])
    assert back["content"] == [{"type": "text", "text": "Let me look."}]
    tool = {"role": "tool", "tool_call_id": "c1", "content": "42"}
    request = build_request([*user("hi"), back, tool])
    assert json.loads(request.to_json())["messages"][1]["content"] == [{"type": "text", "text": "Let me look."}]


def test_the_models_package_keeps_every_module_small():
    from pathlib import Path

    import airflow_agentchat.models as package

    for path in Path(package.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 500, path.name


def test_a_lone_surrogate_in_a_part_is_named():
    with pytest.raises(InvalidRequestError) as caught:
        build_request(user(["fine", {"type": "text", "text": "bad \ud800"}]))
    assert caught.value.errors[0][0] == "messages[0].content[1].text"
