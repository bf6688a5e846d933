"""AgentChatHook against a real scripted HTTP server on 127.0.0.1: request rules, error shapes, streams, connection
rules, secrets and test_connection (its retry loops are in test_sending.py)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from scripted_server import OK, OK_BODY, USER, Delay, chunk, sse

from airflow_agentchat.exceptions import (
    AgentChatError,
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from airflow_agentchat.hooks.agent_chat import AgentChatHook

# ------------------------------------------------------------------------------------------ request rules

BAD_REQUESTS = [
    ("messages", {}, []),
    ("messages[0].role", {}, [{"role": "robot", "content": "x"}]),
    ("messages[0].content", {}, [{"role": "user", "content": 5}]),
    ("messages[0].content[1].image_url", {}, [{"role": "user", "content": ["a", {"type": "image_url"}]}]),
    ("tool_call_id", {}, [{"role": "tool", "content": "x"}]),
    ("tool_call_id", {}, [{"role": "user", "content": "x", "tool_call_id": "t"}]),
    (
        "tool_calls",
        {},
        [
            {
                "role": "user",
                "content": "x",
                "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            }
        ],
    ),
    ("refusal", {}, [{"role": "system", "content": "x", "refusal": "no"}]),
    ("reasoning_content", {}, [{"role": "user", "content": "x", "reasoning_content": "hmm"}]),
    ("temperature", {"temperature": 2.5}, USER),
    ("temperature", {"temperature": -0.1}, USER),
    ("top_p", {"top_p": 1.5}, USER),
    ("frequency_penalty", {"frequency_penalty": -3}, USER),
    ("presence_penalty", {"presence_penalty": 2.1}, USER),
    ("n", {"n": 0}, USER),
    ("n", {"n": 129}, USER),
    ("stop", {"stop": ["a", "b", "c", "d", "e"]}, USER),
    ("stop", {"stop": []}, USER),
    ("stop", {"stop": 3}, USER),
    ("max_completion_tokens", {"max_completion_tokens": 255}, USER),
    ("max_tokens", {"max_tokens": 0}, USER),
    ("logit_bias", {"logit_bias": {"50256": 101}}, USER),
    ("logit_bias", {"logit_bias": {"hello": 1}}, USER),
    ("top_logprobs", {"top_logprobs": 21, "logprobs": True}, USER),
    ("top_logprobs", {"top_logprobs": 2}, USER),
    ("reasoning_effort", {"reasoning_effort": "extreme"}, USER),
    ("tools[0].type", {"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, USER),
    ("tools[0].function.name", {"tools": [{"type": "function", "function": {"name": "bad name"}}]}, USER),
    ("tools[0].function.name", {"tools": [{"type": "function", "function": {"name": "x" * 65}}]}, USER),
    ("tool_choice", {"tool_choice": "sometimes"}, USER),
    (
        "tool_choice",
        {
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        USER,
    ),
    ("tool_choice", {"tool_choice": "required"}, USER),
    ("metadata", {"metadata": {f"k{i}": "v" for i in range(17)}}, USER),
    ("metadata", {"metadata": {"k" * 65: "v"}}, USER),
    ("metadata", {"metadata": {"k": "v" * 513}}, USER),
    ("metadata", {"metadata": {"k": 1}}, USER),
    ("stream_options", {"stream_options": {"include_usage": True}}, USER),
    ("extra_body", {"extra_body": {"temperature": 1}}, USER),
    ("seed", {"seed": "abc"}, USER),
    ("include_retrieval_info", {"include_retrieval_info": "maybe"}, USER),
    ("temprature", {"temprature": 1}, USER),
]


@pytest.mark.parametrize(
    ("field", "params", "messages"), BAD_REQUESTS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_REQUESTS)]
)
def test_invalid_request_fails_before_sending_and_names_the_field(hook_for, scripted, field, params, messages):
    hook, _ = hook_for()
    scripted.script(OK)
    with pytest.raises(InvalidRequestError) as info:
        hook.create_chat_completion(messages, **params)
    assert field in str(info.value)
    assert any(field in f or field in rule for f, rule in info.value.errors)
    assert scripted.requests == []


def test_valid_request_sends_agent_url_key_and_only_set_fields(hook_for, scripted, canary_key):
    hook, _ = hook_for()
    scripted.script(OK)
    result = hook.create_chat_completion(
        USER, temperature=0.2, stop="END", include_retrieval_info=True, extra_body={"custom": 1}
    )
    assert result.text == "hi there"
    assert result.usage_dict() == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert result.meta["request_id"] == "req-ok" and result.meta["attempts"] == 1
    (sent,) = scripted.requests
    assert sent.path == "/api/v1/chat/completions?agent=true"
    assert sent.headers["authorization"] == f"Bearer {canary_key}"
    assert json.loads(sent.body) == {
        "messages": USER,
        "model": "agent",
        "temperature": 0.2,
        "stop": "END",
        "include_retrieval_info": True,
        "custom": 1,
    }


def test_model_comes_from_task_then_connection(hook_for, scripted):
    hook, _ = hook_for(extra={"model": "conn-model"})
    scripted.script(OK, OK)
    hook.create_chat_completion(USER)
    hook.create_chat_completion(USER, model="task-model")
    assert [json.loads(r.body)["model"] for r in scripted.requests] == ["conn-model", "task-model"]


def test_lenient_response_keeps_unknown_keys_and_do_blocks(hook_for, scripted):
    body = {
        "choices": [
            {
                "message": {"content": "x", "reasoning_content": "why", "refusal": None, "extra": 1},
                "finish_reason": "brand_new_reason",
            },
            {"index": 1, "message": {"content": "y"}},
        ],
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
        "retrieval": {"retrieved_data": [{"id": "doc1", "page_content": "p"}]},
        "functions": {"called_functions": ["f"], "function_details": []},
        "guardrails": {"triggered_guardrails": [{"rule_name": "pii"}]},
        "citations": [{"url": "u"}],
        "surprise": {"a": 1},
    }
    hook, _ = hook_for()
    scripted.script((200, {}, json.dumps(body).encode()))
    result = hook.create_chat_completion(USER)
    assert result.texts == ["x", "y"]
    assert result.finish_reason == "brand_new_reason"
    assert result.message.reasoning_content == "why"
    assert result.retrieval.retrieved_data[0]["id"] == "doc1"
    assert result.guardrails.triggered_guardrails[0]["rule_name"] == "pii"
    assert result.to_dict()["surprise"] == {"a": 1}
    assert result.usage_dict()["completion_tokens_details"] == {"reasoning_tokens": 1}


# ------------------------------------------------------------------------------------------ error shapes

ERROR_SHAPES = [
    (
        400,
        {},
        {"error": {"message": "bad thing", "type": "invalid_request_error", "param": "n", "code": "bad_n"}},
        APIError,
        "bad thing",
        "bad_n",
        None,
    ),
    (
        401,
        {"x-request-id": "rid-1"},
        {"error": "Unauthorized key"},
        AuthenticationError,
        "Unauthorized key",
        None,
        "rid-1",
    ),
    (
        429,
        {},
        {"id": "too_many_requests", "message": "slow down", "request_id": "rid-2"},
        RateLimitError,
        "slow down",
        "too_many_requests",
        "rid-2",
    ),
    (
        422,
        {},
        {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
        APIError,
        "messages: field required",
        None,
        None,
    ),
    (404, {}, {"detail": "Not Found"}, NotFoundError, "Not Found", None, None),
    (
        502,
        {"x-request-id": "rid-3"},
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        ServerError,
        "502 Bad Gateway",
        None,
        "rid-3",
    ),
    (500, {}, b"", ServerError, "Internal Server Error", None, None),
]


@pytest.mark.parametrize(("status", "headers", "body", "cls", "message", "code", "request_id"), ERROR_SHAPES)
def test_every_error_shape_surfaces_status_code_message_request_id(
    hook_for, scripted, status, headers, body, cls, message, code, request_id
):
    hook, _ = hook_for(max_retries=0)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    scripted.script((status, headers, payload))
    with pytest.raises(cls) as info:
        hook.create_chat_completion(USER)
    err = info.value
    assert (err.status, err.message, err.code, err.request_id) == (status, message, code, request_id)
    assert f"HTTP {status}" in str(err)


# ------------------------------------------------------------------------------------------ streaming


def test_stream_is_folded_by_create_and_chunked_by_stream(hook_for, scripted):
    hook, _ = hook_for()
    script = sse(chunk("Hel", role="assistant"), chunk("lo"), chunk(finish="stop"), b"[DONE]")
    scripted.script((200, {"Content-Type": "text/event-stream"}, script), (200, {}, script))
    folded = hook.create_chat_completion(USER, stream=True)
    assert folded.text == "Hello" and folded.finish_reason == "stop"
    assert json.loads(scripted.requests[0].body)["stream"] is True
    assert [c.text for c in hook.stream_chat_completion(USER)] == ["Hel", "lo", ""]


def test_async_twins(hook_for, scripted):
    hook, sleeps = hook_for()
    script = sse(chunk("a", role="assistant"), chunk("b", finish="stop"), b"[DONE]")
    scripted.script((500, {}, b""), OK, (200, {}, script), (429, {"retry-after-ms": "10"}, b""), (200, {}, script))

    async def run():
        first = await hook.acreate_chat_completion(USER)
        streamed = [c.text async for c in hook.astream_chat_completion(USER)]
        folded = await hook.acreate_chat_completion(USER, stream=True)
        await hook.aclose()
        return first, streamed, folded

    first, streamed, folded = asyncio.run(run())
    assert first.text == "hi there" and first.meta["attempts"] == 2
    assert streamed == ["a", "b"]
    assert folded.text == "ab"
    assert sleeps.delays == [0.5, 0.01]


def test_a_compressed_answer_is_decoded_sync_and_async(hook_for, scripted):
    """The async path reads identity bodies straight from the transport; an encoded one still goes through
    httpx's decoders."""
    import gzip

    hook, _ = hook_for()
    reply = (200, {"content-encoding": "gzip", "content-type": "application/json"}, gzip.compress(OK_BODY))
    scripted.script(reply, reply)

    async def run():
        completion = await hook.acreate_chat_completion(USER)
        await hook.aclose()
        return completion

    assert hook.create_chat_completion(USER).text == "hi there"
    assert asyncio.run(run()).text == "hi there"


def test_the_request_id_is_read_from_any_of_its_headers(hook_for, scripted):
    hook, _ = hook_for()
    scripted.script(
        (200, {"X-Request-ID": "req-upper"}, OK_BODY),
        (200, {"request-id": "req-plain"}, OK_BODY),
        (200, {"x-litellm-call-id": "call-1"}, OK_BODY),
    )
    ids = [hook.create_chat_completion(USER).meta["request_id"] for _ in range(3)]
    assert ids == ["req-upper", "req-plain", "call-1"]


def test_one_tls_context_per_setting_and_trust_store(monkeypatch, tmp_path):
    """Loading a CA bundle costs ~20 ms: hooks share the context built for the same setting."""
    import ssl

    import certifi

    from airflow_agentchat.hooks.transport import ssl_context as _ssl_context

    assert _ssl_context(True) is _ssl_context(True)
    bundle = _ssl_context(certifi.where())
    assert bundle is _ssl_context(certifi.where()) and bundle.verify_mode == ssl.CERT_REQUIRED
    assert bundle.cert_store_stats()["x509_ca"] > 0
    assert _ssl_context(False).verify_mode == ssl.CERT_NONE
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    assert _ssl_context(True) is not _ssl_context(False)
    before = _ssl_context(True)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "other.pem"))
    (tmp_path / "other.pem").write_text(open(certifi.where()).read())
    assert _ssl_context(True) is not before  # a changed trust store is honoured


# ------------------------------------------------------------------------------------------ faults mid-answer
# Every fault here happens after the request went out: the server counted it, and nothing was delivered to a
# caller yet, so the hook sends again. Each runs through the sync and the async path.

MODES = ["sync", "async"]
SSE_HEADERS = {"Content-Type": "text/event-stream"}


def complete(hook: AgentChatHook, mode: str, **params: object):
    """One create_chat_completion through the sync or the async path."""
    if mode == "sync":
        return hook.create_chat_completion(USER, **params)

    async def run():
        try:
            return await hook.acreate_chat_completion(USER, **params)
        finally:
            await hook.aclose()

    return asyncio.run(run())


# ------------------------------------------------------------------------------------------ connection rules


@pytest.mark.parametrize(
    ("host", "extra", "expected"),
    [
        ("agent-x.agents.do-ai.run", {}, "https://agent-x.agents.do-ai.run"),
        ("https://agent-x.agents.do-ai.run/api/v1/chat/completions", {}, "https://agent-x.agents.do-ai.run"),
        ("https://agent-x.agents.do-ai.run/", {}, "https://agent-x.agents.do-ai.run"),
        ("https://agent-x.agents.do-ai.run/api/v1/", {}, "https://agent-x.agents.do-ai.run"),
        ("https://agent-x.agents.do-ai.run/api/v1/chat/completions/", {}, "https://agent-x.agents.do-ai.run"),
        ("https://gw.example.com/team-a/", {}, "https://gw.example.com/team-a"),
        ("http://10.0.0.5:80", {"allow_insecure_http": "true"}, "http://10.0.0.5:80"),
        ("http://localhost:8080", {}, "http://localhost:8080"),
        ("http://10.0.0.5:80", {"allow_insecure_http": True}, "http://10.0.0.5:80"),
    ],
)
def test_host_is_normalised(make_conn, host, extra, expected):
    assert AgentChatHook(make_conn("norm", host, **extra)).settings.base_url == expected


def test_user_info_in_the_host_is_refused_without_echoing_it(make_conn, canary_key):
    with pytest.raises(AgentChatError, match="user info") as info:
        AgentChatHook(make_conn("userinfo", f"https://me:{canary_key}@agent.example.com")).settings  # noqa: B018
    assert canary_key not in str(info.value)


@pytest.mark.parametrize("allow", [None, False, "false", "0", "no"])
def test_plain_http_to_a_remote_host_is_refused(make_conn, allow):
    extra = {} if allow is None else {"allow_insecure_http": allow}
    with pytest.raises(AgentChatError, match="clear text"):
        AgentChatHook(make_conn("insecure", "http://agent.example.com", **extra)).settings  # noqa: B018


@pytest.mark.parametrize(
    ("extra", "verify"),
    [
        ({}, True),
        ({"verify": "true"}, True),
        ({"verify": "false"}, False),
        ({"verify": False, "ca_bundle": "/etc/ca.pem"}, "/etc/ca.pem"),
    ],
)
def test_verify_extra_accepts_text_booleans(make_conn, extra, verify):
    assert AgentChatHook(make_conn("tls", "https://agent.example.com", **extra)).settings.verify == verify


# ------------------------------------------------------------------------------------------ secrets


def test_canary_key_never_in_logs_or_exceptions(hook_for, scripted, canary_key, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    hook, _ = hook_for(max_retries=1)
    echo = json.dumps({"error": {"message": f"key {canary_key} is not valid", "code": "invalid_api_key"}}).encode()
    scripted.script(
        (503, {}, echo), (401, {}, echo), (200, {}, [*sse({"error": {"message": f"bad key {canary_key}"}})])
    )
    texts = []
    for _ in range(2):
        try:
            list(hook.stream_chat_completion(USER))
        except AgentChatError as exc:
            texts += [str(exc), repr(exc), repr(hook.settings)]
    assert len(texts) == 6
    assert "invalid_api_key" in texts[0]
    logged = caplog.text + "".join(capfd.readouterr())  # the hook logs through structlog to the output
    assert "retrying in" in logged
    joined = "\n".join(texts) + logged
    assert canary_key not in joined
    assert "***" in texts[0]


def _echo_everywhere(key: str) -> bytes:
    error = {"message": f"key {key} rejected", "code": key, "type": key, "param": key, "request_id": key}
    return json.dumps({"error": error, "request_id": key}).encode()


def _echo_cases(key: str) -> dict[str, tuple[list, dict]]:
    """Replies that echo the key in every field a server can put it in; the first one of each is retried."""
    header = {"x-request-id": key, "request-id": key}
    return {
        "error object and header": ([(503, header, _echo_everywhere(key)), (400, header, _echo_everywhere(key))], {}),
        "id/message shape and header": (
            [
                (503, header, json.dumps({"id": key, "message": key}).encode()),
                (401, header, b'{"id": "%s"}' % key.encode()),
            ],
            {},
        ),
        "proxy HTML page and header": (
            [(502, header, f"<html><title>{key}</title></html>".encode())] * 2,
            {},
        ),
        "text body and header": ([(500, header, key.encode())] * 2, {}),
        "malformed 200 and header": ([(200, header, f"oops {key}".encode())] * 2, {}),
        "stream error event": (
            [(503, header, b""), (200, {**header, **SSE_HEADERS}, sse(json.loads(_echo_everywhere(key))))],
            {"stream": True},
        ),
        "stream error event with event type": (
            [(503, header, b""), (200, SSE_HEADERS, [b"event: error\ndata: " + _echo_everywhere(key) + b"\n\n"])],
            {"stream": True},
        ),
        "stream data that is not a chunk": ([(200, header, sse(f"{key} {key}".encode()))] * 2, {"stream": True}),
    }


def _texts_of(exc: BaseException) -> list[str]:
    """Everything an error shows: str, repr, args and every attribute (public or not)."""
    texts = [str(exc), repr(exc), *map(repr, exc.args)]
    texts += [f"{name}={value!r}" for name, value in vars(exc).items()]
    texts += [repr(getattr(exc, name, None)) for name in ("message", "code", "error_type", "param", "request_id")]
    return texts


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(_echo_cases("k")), ids=list(_echo_cases("k")))
def test_key_echoed_in_every_error_field_never_leaks(hook_for, scripted, canary_key, caplog, capfd, mode, case):
    # INFO: httpcore's own DEBUG trace prints raw response headers (Airflow's secret masker covers task logs).
    caplog.set_level(logging.INFO)
    replies, params = _echo_cases(canary_key)[case]
    hook, _ = hook_for(max_retries=1)
    scripted.script(*replies)
    with pytest.raises(AgentChatError) as info:
        complete(hook, mode, **params)
    assert info.value.attempts == len(scripted.requests) == 2  # the first reply was retried
    logged = caplog.text + "".join(capfd.readouterr())  # the hook's retry warning goes through structlog
    assert "retrying in" in logged
    leaks = [text for text in [*_texts_of(info.value), *logged.splitlines()] if canary_key in text]
    assert leaks == []
    assert "***" in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_key_echoed_in_the_request_id_of_an_answer_is_not_kept(hook_for, scripted, canary_key, mode):
    hook, _ = hook_for()
    scripted.script((200, {"x-request-id": f"req-{canary_key}"}, OK_BODY))
    assert complete(hook, mode).meta["request_id"] == "req-***"


# ------------------------------------------------------------------------------------------ test_connection


def test_test_connection_reports_latency_model_tokens(hook_for, scripted):
    hook, _ = hook_for()
    scripted.script(OK)
    ok, message = hook.test_connection()
    assert ok, message
    assert "ms" in message and "model m" in message and "3 prompt + 2 completion tokens" in message
    assert json.loads(scripted.requests[0].body)["max_tokens"] == 16


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ((401, {}, b'{"error": {"message": "bad key", "code": "invalid_api_key"}}'), "Access key rejected"),
        ((404, {}, b'{"detail": "Not Found"}'), "not an agent endpoint"),
        ((429, {"retry-after": "5"}, b'{"error": "too many"}'), "Rate limited"),
    ],
)
def test_test_connection_explains_failures(hook_for, scripted, reply, expected, canary_key):
    hook, sleeps = hook_for()
    scripted.script(reply, OK)
    ok, message = hook.test_connection()
    assert not ok and expected in message and canary_key not in message
    assert len(scripted.requests) == 1 and sleeps.delays == []


def test_test_connection_closed_port_and_unknown_host(make_conn):
    ok, message = AgentChatHook(make_conn("closed2", "http://127.0.0.1:9")).test_connection()
    assert not ok and "connection refused" in message
    ok, message = AgentChatHook(make_conn("nohost", "https://no-such-host.invalid")).test_connection()
    assert not ok and "resolve" in message


def test_test_connection_explains_tls_and_timeouts_by_the_error_class(make_conn, scripted):
    ok, message = AgentChatHook(make_conn("tls", scripted.url.replace("http://", "https://"))).test_connection()
    assert not ok and message.startswith("TLS failed for") and "CA bundle" in message
    scripted.script(Delay(1.5, OK))
    ok, message = AgentChatHook(make_conn("slow", scripted.url), timeout=0.5).test_connection()
    assert not ok and message.startswith("Timed out talking to")


def test_environment_proxy_is_applied_unless_no_proxy(make_conn, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "bypass.example.com")
    assert AgentChatHook(make_conn("proxied", "https://agent.example.com"))._proxy == "http://proxy.internal:3128"
    assert AgentChatHook(make_conn("bypassed", "https://bypass.example.com"))._proxy is None


def test_requests_really_go_through_the_proxy_sync_and_async(make_conn, scripted, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", scripted.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    hook = AgentChatHook(make_conn("viaproxy", "http://127.0.0.1:9"), max_retries=0)
    scripted.script(OK, OK)
    assert hook.create_chat_completion(USER).text == "hi there"
    assert asyncio.run(hook.acreate_chat_completion(USER)).text == "hi there"
    assert [r.path for r in scripted.requests] == ["http://127.0.0.1:9/api/v1/chat/completions?agent=true"] * 2


def test_a_response_message_with_unknown_keys_can_be_sent_back(hook_for, scripted):
    """Tool round trips send the assistant message back; response-only keys must not break the request."""
    from airflow_agentchat.models import ChatCompletion, as_request_message

    response = ChatCompletion.model_validate(
        {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "annotations": [],
                        "tool_calls": [
                            {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    message = as_request_message(response.to_dict()["choices"][0]["message"])
    hook, _ = hook_for()
    request = hook.build_request(
        [{"role": "user", "content": "q"}, message, {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    )
    assert request.to_body()["messages"][1] == {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
