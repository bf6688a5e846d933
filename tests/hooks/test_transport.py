"""The hook through its public ``transport=`` seam: fast unit tests with ``httpx.MockTransport``.

No server process: the transport is httpx's own test transport, a real ``BaseTransport`` /
``AsyncBaseTransport`` that the hook sends to exactly as it sends to the network one. What needs a socket
(timeouts, resets, trickles, cancel) is tested against real servers in hooks/test_agent_chat.py,
hooks/test_body.py and hooks/test_deadline.py."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading

import httpx
import pytest
from scripted_server import Delay

from airflow_agentchat.exceptions import AgentChatConnectionError, ResponseTooLargeError, ServerError
from airflow_agentchat.hooks.agent_chat import AgentChatHook
from airflow_agentchat.hooks.retry import RetryPolicy

USER = [{"role": "user", "content": "hello"}]
ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class Recorder:
    """A handler that answers from a list and keeps every request it saw."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)


def hook_with(make_conn, handler, **kwargs) -> tuple[AgentChatHook, list[float]]:
    delays: list[float] = []

    async def asleep(seconds: float) -> None:
        delays.append(seconds)

    extra = kwargs.pop("extra", {})
    hook = AgentChatHook(
        make_conn("mocked", "https://agent.example.com", **extra),
        transport=httpx.MockTransport(handler),
        retry_policy=RetryPolicy(max_retries=kwargs.pop("max_retries", 2), jitter=lambda: 1.0),
        sleep=delays.append,
        async_sleep=asleep,
        **kwargs,
    )
    hook._pause.remaining = lambda: 0.0  # type: ignore[method-assign]
    return hook, delays


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_request_on_the_wire_and_the_answer(make_conn, canary_key, mode):
    handler = Recorder(httpx.Response(200, json=ANSWER, headers={"x-request-id": "rid-1"}))
    hook, _ = hook_with(make_conn, handler)
    if mode == "sync":
        completion = hook.create_chat_completion(USER, temperature=0.5)
    else:
        completion = asyncio.run(hook.acreate_chat_completion(USER, temperature=0.5))
    (sent,) = handler.requests
    assert str(sent.url) == "https://agent.example.com/api/v1/chat/completions?agent=true"
    assert sent.headers["authorization"] == f"Bearer {canary_key}"
    assert json.loads(sent.content) == {"model": "agent", "messages": USER, "temperature": 0.5}
    assert completion.text == "hi" and completion.meta["request_id"] == "rid-1" and completion.meta["attempts"] == 1


def test_a_5xx_is_retried_after_the_back_off(make_conn):
    handler = Recorder(httpx.Response(503, json={"error": {"message": "busy"}}), httpx.Response(200, json=ANSWER))
    hook, delays = hook_with(make_conn, handler)
    assert hook.create_chat_completion(USER).meta["attempts"] == 2
    assert delays == [0.5] and len(handler.requests) == 2


def test_retries_run_out_with_the_servers_words(make_conn):
    handler = Recorder(*[httpx.Response(502, json={"error": {"message": "down", "code": "up_down"}})] * 3)
    hook, _ = hook_with(make_conn, handler)
    with pytest.raises(ServerError, match="down") as info:
        hook.create_chat_completion(USER)
    assert info.value.attempts == 3 and info.value.code == "up_down"


def test_a_gzip_answer_is_decoded(make_conn):
    body = gzip.compress(json.dumps(ANSWER).encode())
    hook, _ = hook_with(make_conn, Recorder(httpx.Response(200, content=body, headers={"content-encoding": "gzip"})))
    assert hook.create_chat_completion(USER).text == "hi"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_size_cap_is_not_retried(make_conn, mode):
    big = httpx.Response(200, content=b'{"id": "' + b"x" * 5000 + b'"}')
    hook, _ = hook_with(make_conn, Recorder(big), extra={"max_response_bytes": 4096})
    with pytest.raises(ResponseTooLargeError, match="max_response_bytes=4096") as info:
        hook.create_chat_completion(USER) if mode == "sync" else asyncio.run(hook.acreate_chat_completion(USER))
    assert info.value.attempts == 1 and not info.value.retryable


def test_a_stream_through_the_seam(make_conn):
    events = [
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": t}}]}
        for t in ("Hel", "lo")
    ]
    events.append(
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    )
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    hook, _ = hook_with(make_conn, Recorder(httpx.Response(200, content=body)))
    assert [c.text for c in hook.stream_chat_completion(USER)] == ["Hel", "lo", ""]


@pytest.mark.parametrize(
    ("status", "start"),
    [
        (401, "Access key rejected by https://agent.example.com"),
        (404, "https://agent.example.com/api/v1/chat/completions answered 404"),
    ],
)
def test_test_connection_wording(make_conn, status, start):
    hook, _ = hook_with(make_conn, Recorder(httpx.Response(status, json={"error": {"message": "no"}})))
    ok, message = hook.test_connection()
    assert not ok and message.startswith(start)


def test_test_connection_success(make_conn):
    hook, _ = hook_with(make_conn, Recorder(httpx.Response(200, json=ANSWER)))
    ok, message = hook.test_connection()
    assert ok and message.startswith("Connected to https://agent.example.com") and "3 prompt + 1 completion" in message


@pytest.mark.timeout(60)
def test_cancel_wakes_a_sync_request_blocked_reading(make_conn, scripted):
    """cancel() finds the sockets through public httpcore extensions, not the pool's private fields."""
    scripted.script(Delay(30, (200, {}, json.dumps(ANSWER).encode())))
    hook = AgentChatHook(make_conn("cancelled", scripted.url), timeout=60, max_retries=3)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            hook.create_chat_completion(USER)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    while not scripted.requests:
        thread.join(0.01)
    hook.cancel()
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome[0], AgentChatConnectionError) and outcome[0].attempts == 1
    assert len(scripted.requests) == 1
