"""Conformance of the dev server with the official ``openai`` SDK (an independent client), in every mode.

One dev server subprocess serves the module (with an API key, so auth is exercised on every call); stats
and faults are reset before each test.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import jsonschema
import openai
import pytest
from suite import DEVSERVER_KEY as KEY

from airflow_agentchat.devserver import DevServer
from airflow_agentchat.devserver.answers import example_for_schema

USER = [{"role": "user", "content": "hello there world"}]


def post(server: DevServer, body: bytes, key: str | None = KEY) -> tuple[int, dict[str, str], bytes]:
    """A raw POST, for what the SDK hides (headers, non-JSON bodies)."""
    request = urllib.request.Request(f"{server.base_url}/chat/completions?agent=true", data=body, method="POST")
    request.add_header("content-type", "application/json")
    if key:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 3},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "precise": {"type": "boolean"},
                "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "where": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat", "lon"],
                },
                "note": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
            },
            "required": ["city", "unit", "days", "tags", "where"],
            "additionalProperties": False,
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "$defs": {"Q": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
            "properties": {"query": {"$ref": "#/$defs/Q"}, "limit": {"type": "integer", "multipleOf": 5}},
            "required": ["query", "limit"],
        },
    },
}


# ----------------------------------------------------------------------------------------- plain answers


def test_plain_answer_and_usage(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=USER)
    assert result.object == "chat.completion"
    assert result.choices[0].message.content == "Echo: hello there world"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 4)
    assert result.usage.total_tokens == 8


def test_raw_response_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="m", messages=USER)
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.parse().choices[0].message.content == "Echo: hello there world"


def test_answer_is_deterministic_and_markers_are_stripped(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Echo: first"},
        {"role": "user", "content": "  second [[latency:1]] question  "},
    ]
    one = client.chat.completions.create(model="m", messages=messages)
    two = client.chat.completions.create(model="m", messages=messages)
    assert one.choices[0].message.content == two.choices[0].message.content == "Echo: second  question"


def test_n_choices_differ_by_index(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=USER, n=3)
    assert [c.index for c in result.choices] == [0, 1, 2]
    assert [c.message.content for c in result.choices] == [
        "Echo: hello there world",
        "Echo 1: hello there world",
        "Echo 2: hello there world",
    ]


def test_stop_truncates_before_sequence(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=USER, stop=["there", "zzz"])
    assert result.choices[0].message.content == "Echo: hello "
    assert result.choices[0].finish_reason == "stop"


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=USER, max_tokens=2)
    assert result.choices[0].message.content == "Echo: hello"
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 2


def test_max_completion_tokens_is_accepted(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=USER, max_completion_tokens=256)
    assert result.choices[0].finish_reason == "stop"


def test_logprobs(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=USER, logprobs=True, top_logprobs=3)
    content = result.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None
    assert "".join(t.token for t in content) == result.choices[0].message.content
    for token in content:
        assert token.logprob <= 0
        assert bytes(token.bytes or []) == token.token.encode()
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].token == token.token
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob


def test_logprobs_absent_unless_asked(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model="m", messages=USER).choices[0].logprobs is None


# -------------------------------------------------------------------------------------------------- tools


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", "get_weather"),
        ("required", "get_weather"),
        ({"type": "function", "function": {"name": "search"}}, "search"),
    ],
)
def test_tool_call_arguments_validate(client: openai.OpenAI, tool_choice: Any, expected: str) -> None:
    result = client.chat.completions.create(model="m", messages=USER, tools=[WEATHER, SEARCH], tool_choice=tool_choice)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == expected
    schema = (WEATHER if expected == "get_weather" else SEARCH)["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_tool_choice_required_calls_a_tool_after_tool_results_too(client: openai.OpenAI) -> None:
    """docs/tools-and-approval.md: "required" makes every answer call a tool; the tools not called yet first."""

    def after(*names: str) -> str | None:
        calls = [
            {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": "{}"}} for i, n in enumerate(names)
        ]
        results = [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in calls]
        messages = [*USER, {"role": "assistant", "content": None, "tool_calls": calls}, *results]
        answer = client.chat.completions.create(
            model="m", messages=messages, tools=[WEATHER, SEARCH], tool_choice="required"
        )
        (call,) = answer.choices[0].message.tool_calls or []
        return call.function.name

    assert after("get_weather") == "search"
    assert after("get_weather", "search") == "search"  # every tool called: the last one again


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=USER, tools=[WEATHER], tool_choice="none")
    assert result.choices[0].message.content == "Echo: hello there world"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": ["string", "null"], "maxLength": 2}}, "required": ["a"]},
        {
            "type": "object",
            "properties": {
                "e": {"const": 3},
                "u": {"type": "array", "uniqueItems": True, "minItems": 3, "items": {"type": "integer"}},
            },
            "required": ["e", "u"],
        },
        {"type": "object", "allOf": [{"properties": {"x": {"type": "number", "maximum": -5}}, "required": ["x"]}]},
        {"type": "object", "properties": {"s": {"type": "string", "format": "email"}}, "required": ["s"]},
        {"type": "object", "properties": {}},
    ],
)
def test_example_for_schema_validates(schema: dict[str, Any]) -> None:
    jsonschema.validate(example_for_schema(schema), schema)


def test_tool_results_follow_up(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="m", messages=USER, tools=[WEATHER])
    call = (first.choices[0].message.tool_calls or [])[0]
    messages = [
        *USER,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    second = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Tool results: get_weather=sunny, 21C"


# ---------------------------------------------------------------------------------------------- streaming


def test_stream_text(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Echo: hello there world"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_stream_include_usage_and_n(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m", messages=USER, stream=True, n=2, stream_options={"include_usage": True}, max_tokens=3
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    texts: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    assert texts == {0: "Echo: hello there", 1: "Echo 1: hello"}
    assert finishes == {0: "length", 1: "length"}


def test_stream_logprobs(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True, logprobs=True, top_logprobs=1))
    tokens = [t.token for c in chunks for ch in c.choices if ch.logprobs for t in ch.logprobs.content or []]
    assert "".join(tokens) == "Echo: hello there world"


def test_stream_tool_call_fragments(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=USER, tools=[WEATHER], stream=True))
    deltas = [tc for c in chunks for ch in c.choices for tc in ch.delta.tool_calls or []]
    assert len(deltas) > 2
    assert deltas[0].id and deltas[0].type == "function" and deltas[0].function.name == "get_weather"
    assert all(d.id is None and d.type is None for d in deltas[1:])
    assert all(d.index == 0 for d in deltas)
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_wire_format(server: DevServer, client: openai.OpenAI) -> None:
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    status, headers, raw = post(server, body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = raw.decode().split("\n\n")
    assert events[-2] == "data: [DONE]" and events[-1] == ""
    assert all(e.startswith("data: ") for e in events[:-1])


# ------------------------------------------------------------------------------------------- DO extras


def test_do_extras(client: openai.OpenAI) -> None:
    extra = {
        "include_retrieval_info": True,
        "include_functions_info": True,
        "include_guardrails_info": True,
        "provide_citations": True,
    }
    result = client.chat.completions.create(model="m", messages=USER, tools=[SEARCH], extra_body=extra)
    data = result.model_dump()
    assert data["retrieval"]["retrieved_data"][0].keys() >= {"id", "index"}
    assert data["functions"]["called_functions"] == ["search"]
    assert data["functions"]["function_details"][0]["name"] == "search"
    assert data["guardrails"] == {"triggered_guardrails": []}
    assert data["citations"][0]["id"] == data["retrieval"]["retrieved_data"][0]["id"]
    plain = client.chat.completions.create(model="m", messages=USER).model_dump()
    assert not {"retrieval", "functions", "guardrails", "citations"} & plain.keys()


def test_do_extras_streamed_on_last_finish_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="m", messages=USER, stream=True, extra_body={"include_retrieval_info": True}
        )
    )
    assert "retrieval" in chunks[-1].model_dump()
    assert chunks[-1].choices[0].finish_reason == "stop"


# -------------------------------------------------------------------------------------- validation, auth


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": USER, "temperature": 2.5}, "temperature"),
        ({"messages": USER, "top_p": 1.5}, "top_p"),
        ({"messages": USER, "n": 0}, "n"),
        ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": USER, "max_completion_tokens": 10}, "max_completion_tokens"),
        ({"messages": USER, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        (
            {"messages": USER, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
    ],
)
def test_invalid_request_is_400(client: openai.OpenAI, params: dict[str, Any], field: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", **params)
    assert info.value.status_code == 400
    error = info.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error"
    assert field in error["message"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b'{"messages": [1]}', b'{"messages": "hi"}'])
def test_malformed_request_body_is_400(server: DevServer, client: openai.OpenAI, body: bytes) -> None:
    status, headers, raw = post(server, body)
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"
    assert headers["x-request-id"]


def test_unknown_top_level_keys_are_accepted(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=USER, extra_body={"custom_flag": 1})
    assert result.choices[0].message.content == "Echo: hello there world"


def test_auth_required(server: DevServer, client: openai.OpenAI) -> None:
    bad = openai.OpenAI(base_url=server.base_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="m", messages=USER)
    assert info.value.code == "invalid_api_key"
    assert "wrong-key" not in str(info.value.body) and KEY not in str(info.value.body)
    status, _, raw = post(server, json.dumps({"messages": USER}).encode(), key=None)
    assert status == 401 and KEY not in raw.decode()
    server.configure(api_key=None)
    try:
        assert bad.chat.completions.create(model="m", messages=USER).choices[0].message.content
    finally:
        server.configure(api_key=KEY)


# ------------------------------------------------------------------------------------------------ faults


def test_429_with_retry_after(server: DevServer, client: openai.OpenAI) -> None:
    server.add_faults([{"kind": "429", "retry_after": 1, "retry_after_ms": 1500, "times": 2}])
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="m", messages=USER)
        assert info.value.response.headers["retry-after"] == "1"
        assert info.value.response.headers["retry-after-ms"] == "1500"
        assert info.value.code == "rate_limit_exceeded"
    assert client.chat.completions.create(model="m", messages=USER).choices[0].finish_reason == "stop"
    stats = server.stats()
    assert stats["by_status"] == {"429": 2, "200": 1}
    assert stats["faults_delivered"] == 2
    assert server.pending_faults() == []


def test_insufficient_quota(server: DevServer, client: openai.OpenAI) -> None:
    server.add_faults({"kind": "insufficient_quota"})
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=USER)
    assert info.value.code == "insufficient_quota"


def test_500_and_match(server: DevServer, client: openai.OpenAI) -> None:
    server.add_faults([{"kind": "500", "match": "boom"}])
    assert client.chat.completions.create(model="m", messages=USER).choices  # does not match
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "boom now"}])
    assert info.value.status_code == 500


def test_502_html_page(server: DevServer) -> None:
    server.add_faults({"kind": "502"})
    status, headers, raw = post(server, json.dumps({"messages": USER}).encode())
    assert status == 502 and headers["content-type"].startswith("text/html")
    assert b"502 Bad Gateway" in raw


@pytest.mark.parametrize(
    ("spec", "status", "check"),
    [
        ({"kind": "error_text", "message": "oops"}, 500, lambda b: b == {"error": "oops"}),
        ({"kind": "too_many_requests"}, 429, lambda b: b["id"] == "too_many_requests" and b["request_id"]),
        ({"kind": "detail", "message": "nope"}, 400, lambda b: b == {"detail": "nope"}),
        ({"kind": "detail", "detail_list": True}, 422, lambda b: isinstance(b["detail"], list)),
        ({"kind": "503", "retry_after": 2}, 503, lambda b: b["error"]["type"] == "server_error"),
    ],
)
def test_other_error_shapes(server: DevServer, spec: dict[str, Any], status: int, check: Any) -> None:
    server.reset()
    server.add_faults(spec)
    got, headers, raw = post(server, json.dumps({"messages": USER}).encode())
    assert got == status and check(json.loads(raw))
    assert headers["x-request-id"]
    if spec.get("kind") == "too_many_requests":
        assert json.loads(raw)["request_id"] == headers["x-request-id"]


def test_connection_reset(server: DevServer, client: openai.OpenAI) -> None:
    server.add_faults({"kind": "reset"})
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=USER)
    assert server.stats()["by_status"] == {"reset": 1}


def test_malformed_json_body(server: DevServer, client: openai.OpenAI) -> None:
    server.add_faults({"kind": "malformed"})
    status, _, raw = post(server, json.dumps({"messages": USER}).encode())
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(raw)


def test_truncated_stream(server: DevServer, client: openai.OpenAI) -> None:
    server.add_faults({"kind": "truncate", "after_chunks": 2})
    chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    assert len(chunks) == 2
    assert all(c.choices[0].finish_reason is None for c in chunks)


def test_error_event_mid_stream(server: DevServer, client: openai.OpenAI) -> None:
    server.add_faults({"kind": "error_event", "message": "agent crashed"})
    stream = client.chat.completions.create(model="m", messages=USER, stream=True)
    with pytest.raises(openai.APIError, match="agent crashed"):
        list(stream)


def test_fault_markers(server: DevServer, client: openai.OpenAI) -> None:
    prompt = [{"role": "user", "content": "flaky [[fault:503:times=2,retry_after=0]]"}]
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=prompt)
    assert client.chat.completions.create(model="m", messages=prompt).choices[0].message.content == "Echo: flaky"
    always = [{"role": "user", "content": "bad [[fault:429:retry_after=1]] [[latency:5]]"}]
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=always)
    stats = server.stats()
    assert stats["by_prompt"][prompt[0]["content"]] == 3
    assert stats["by_prompt"][always[0]["content"]] == 2


def test_stats_and_reset(server: DevServer, client: openai.OpenAI) -> None:
    for _ in range(3):
        client.chat.completions.create(model="m", messages=USER)
    stats = server.stats()
    assert stats["total"] == 3 and len(stats["timestamps"]) == 3
    assert stats["timestamps"] == sorted(stats["timestamps"])
    assert stats["by_prompt"] == {"hello there world": 3}
    server.add_faults({"kind": "500", "times": -1})
    server.reset()
    assert server.stats()["total"] == 0 and server.pending_faults() == []
    assert client.chat.completions.create(model="m", messages=USER).choices


def test_latency_config(server: DevServer, client: openai.OpenAI) -> None:
    config = server.configure(latency_ms=1, chunk_latency_ms=1)
    assert config == {"latency_ms": 1.0, "chunk_latency_ms": 1.0, "api_key_set": True}
    assert (
        "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="m", messages=USER, stream=True)
        )
        == "Echo: hello there world"
    )


def test_bad_fault_spec_rejected(server: DevServer) -> None:
    with pytest.raises(Exception, match="400"):
        server.add_faults({"kind": "explode"})


def test_cli_refuses_non_loopback() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "airflow_agentchat.devserver", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0 and "loopback" in bad.stderr


def test_server_listens_on_loopback_only(server: DevServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    port = int(server.url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_request_without_a_model_is_answered_with_the_providers_default_model(server: DevServer) -> None:
    """The dev server and the request model use one name for the placeholder model."""
    from airflow_agentchat.models import DEFAULT_MODEL

    server.reset()
    status, _, body = post(server, json.dumps({"messages": USER}).encode())
    assert status == 200 and json.loads(body)["model"] == DEFAULT_MODEL
