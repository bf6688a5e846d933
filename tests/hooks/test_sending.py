"""Sending with retries (hooks/sending.py), against a real scripted HTTP server on 127.0.0.1: what is retried and
after how long, faults mid-answer, attempts counted, the shared pause, and hostile nesting."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from email.utils import formatdate

import pytest
from scripted_server import OK, OK_BODY, RESET, USER, Delay, chunk, sse

from airflow_agentchat import exceptions as errors
from airflow_agentchat.exceptions import (
    AgentChatConnectionError,
    AgentChatError,
    APIError,
    RateLimitError,
    ServerError,
    StreamError,
)
from airflow_agentchat.hooks.agent_chat import AgentChatHook
from airflow_agentchat.hooks.retry import RetryPolicy, retry_after_from_headers

# ------------------------------------------------------------------------------------------ retries


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": formatdate(1_000_000_007, usegmt=True)}, 7.0),
        ({"x-ratelimit-reset-requests": "1m30s"}, 90.0),
        ({"ratelimit-reset": "4"}, 4.0),
        ({"x-ratelimit-reset-requests": "250ms", "x-ratelimit-reset-tokens": "2s"}, 2.0),
        ({"x-ratelimit-reset": "1000000005"}, 5.0),
        ({"llm_provider-retry-after": "6"}, 6.0),
        ({"retry-after": "2", "llm_provider-retry-after": "6"}, 2.0),
        ({}, None),
    ],
)
def test_retry_after_headers_are_read(headers, expected):
    assert retry_after_from_headers(headers, now=1_000_000_000) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry-after": "2"}, 2.0), ({"retry-after-ms": "350"}, 0.35), ({"x-ratelimit-reset-requests": "1s"}, 1.0)],
)
def test_rate_limited_request_waits_what_the_server_asks(hook_for, scripted, headers, expected):
    hook, sleeps = hook_for()
    scripted.script((429, headers, b'{"error": {"message": "rate limited", "code": "rate_limit_exceeded"}}'), OK)
    result = hook.create_chat_completion(USER)
    assert result.text == "hi there"
    assert result.meta["attempts"] == 2
    assert sleeps.delays == [expected]
    assert len(scripted.requests) == 2


def test_a_litellm_proxy_is_understood(hook_for, scripted):
    """LiteLLM forwards the provider's retry-after as llm_provider-retry-after and ids calls x-litellm-call-id;
    its error bodies put the status in "code", which the error text must not repeat."""
    hook, sleeps = hook_for(max_retries=1)
    body = b'{"error": {"message": "rate limited upstream", "type": "throttling_error", "code": "429"}}'
    litellm = {"llm_provider-retry-after": "7", "x-litellm-call-id": "call-1"}
    scripted.script((429, litellm, body), (429, litellm, body))
    with pytest.raises(RateLimitError) as info:
        hook.create_chat_completion(USER)
    assert sleeps.delays == [7.0]
    assert info.value.request_id == "call-1" and info.value.code == "429"
    assert str(info.value) == "rate limited upstream (HTTP 429, request_id=call-1)"
    scripted.script((200, {"x-litellm-call-id": "call-2"}, OK_BODY))
    assert hook.create_chat_completion(USER).meta["request_id"] == "call-2"


def test_reset_headers_only_delay_a_429(hook_for, scripted):
    """OpenAI-style servers send x-ratelimit-reset-* on every response; a 500 must not wait for the window."""
    hook, sleeps = hook_for()
    reset = {"x-ratelimit-reset-tokens": "6m0s"}
    scripted.script((500, reset, b""), (429, reset, b""), OK)
    hook.create_chat_completion(USER)
    assert sleeps.delays == [0.5, 120.0]  # back-off for the 500; the reset (capped at max_wait) for the 429


def test_backoff_is_exponential_and_capped_for_5xx_and_408_409(hook_for, scripted):
    hook, sleeps = hook_for(max_retries=4)
    scripted.script((500, {}, b""), (503, {}, b""), (408, {}, b""), (409, {}, b""), OK)
    assert hook.create_chat_completion(USER).text == "hi there"
    assert sleeps.delays == [0.5, 1.0, 2.0, 4.0]


def test_retries_run_out_and_the_last_error_surfaces(hook_for, scripted):
    hook, sleeps = hook_for(max_retries=2)
    scripted.script(*[(503, {"x-request-id": "r"}, b'{"error": {"message": "overloaded"}}')] * 3)
    with pytest.raises(ServerError, match="overloaded"):
        hook.create_chat_completion(USER)
    assert len(scripted.requests) == 3 and len(sleeps.delays) == 2


def test_insufficient_quota_is_final(hook_for, scripted):
    hook, sleeps = hook_for()
    scripted.script((429, {"retry-after": "1"}, b'{"error": {"message": "quota", "code": "insufficient_quota"}}'), OK)
    with pytest.raises(RateLimitError) as info:
        hook.create_chat_completion(USER)
    assert info.value.code == "insufficient_quota"
    assert len(scripted.requests) == 1 and sleeps.delays == []


def test_client_errors_are_not_retried(hook_for, scripted):
    hook, sleeps = hook_for()
    scripted.script((400, {}, b'{"error": {"message": "no"}}'), OK)
    with pytest.raises(APIError):
        hook.create_chat_completion(USER)
    assert len(scripted.requests) == 1 and sleeps.delays == []


def test_connection_reset_is_retried(hook_for, scripted):
    hook, sleeps = hook_for()
    scripted.script(RESET, OK)
    assert hook.create_chat_completion(USER).text == "hi there"
    assert len(scripted.requests) == 2 and sleeps.delays == [0.5]


def test_closed_port_raises_connection_error(make_conn, canary_key):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hook = AgentChatHook(make_conn("closed", f"http://127.0.0.1:{port}"), max_retries=0)
    with pytest.raises(AgentChatConnectionError) as info:
        hook.create_chat_completion(USER)
    assert f"127.0.0.1:{port}" in str(info.value) and canary_key not in str(info.value)


def test_a_429_pause_holds_the_retry_back_in_real_time(scripted, make_conn):
    """The pause is the hook's own clock, not only a recorded delay (concurrent requests: see "shared pause")."""
    hook = AgentChatHook(make_conn("pause", scripted.url), retry_policy=RetryPolicy(jitter=lambda: 1))
    scripted.script((429, {"retry-after": "0.3"}, b"{}"), OK)
    assert hook.create_chat_completion(USER).meta["attempts"] == 2
    hook.close()
    limited, retried = scripted.requests
    assert retried.at >= limited.replied_at + 0.3


def test_cancel_stops_the_async_path_from_sending_again(scripted, make_conn):
    """cancel() used to stop only the sync loop: the async one slept out the back-off and sent again."""
    hook = AgentChatHook(make_conn("cancel-async", scripted.url), retry_policy=RetryPolicy(jitter=lambda: 1))
    scripted.script((503, {"retry-after": "0.3"}, b"busy"), OK)

    async def run() -> None:
        task = asyncio.create_task(hook.acreate_chat_completion(USER))
        while not scripted.requests:
            await asyncio.sleep(0.005)
        hook.cancel()
        try:
            await task
        finally:
            await hook.aclose()

    with pytest.raises(AgentChatError) as info:
        asyncio.run(run())
    assert len(scripted.requests) == 1 and info.value.attempts == 1


def test_stream_error_before_first_event_is_retried(hook_for, scripted):
    hook, sleeps = hook_for()
    script = sse(chunk("ok", role="assistant", finish="stop"), b"[DONE]")
    scripted.script((503, {"retry-after": "1"}, b"busy"), (200, {}, script))
    assert [c.text for c in hook.stream_chat_completion(USER)] == ["ok"]
    assert sleeps.delays == [1.0]


def test_stream_is_never_retried_after_its_first_event(hook_for, scripted):
    hook, sleeps = hook_for()
    scripted.script((200, {}, [*sse(chunk("partial", role="assistant")), RESET]), OK)
    received = []
    with pytest.raises(StreamError):
        for piece in hook.stream_chat_completion(USER):
            received.append(piece.text)
    assert received == ["partial"]
    assert len(scripted.requests) == 1 and sleeps.delays == []


# ------------------------------------------------------------------------------------------ faults mid-answer
# Every fault here happens after the request went out: the server counted it, and nothing was delivered to a
# caller yet, so the hook sends again. Each runs through the sync and the async path.

MODES = ["sync", "async"]
SSE_HEADERS = {"Content-Type": "text/event-stream"}
GOOD_STREAM = (200, SSE_HEADERS, sse(chunk("good", role="assistant", finish="stop"), b"[DONE]"))


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


def consume_stream(hook: AgentChatHook, mode: str) -> tuple[list[str | None], AgentChatError | None]:
    """Iterate stream_chat_completion (or its async twin) as a caller would; the texts seen and the error."""
    received: list[str | None] = []
    if mode == "sync":
        try:
            for piece in hook.stream_chat_completion(USER):
                received.append(piece.text)
        except AgentChatError as exc:
            return received, exc
        return received, None

    async def run():
        try:
            async for piece in hook.astream_chat_completion(USER):
                received.append(piece.text)
        except AgentChatError as exc:
            return exc
        finally:
            await hook.aclose()
        return None

    return received, asyncio.run(run())


def cut(body: bytes, *, chunked: bool) -> tuple[int, dict[str, str], list]:
    """A 200 whose connection closes halfway through the body, after the headers went out."""
    headers = {"Content-Type": "application/json"}
    if not chunked:
        headers["Content-Length"] = str(len(body))
    return (200, headers, [body[: len(body) // 2], RESET])


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CONNECTION_FAULTS = {
    "refused": (lambda url: f"http://127.0.0.1:{_closed_port()}", None, errors.RefusedError),
    "unknown host": (lambda url: "https://no-such-host.invalid", None, errors.DNSError),
    "TLS to a plain-HTTP port": (lambda url: url.replace("http://", "https://"), None, errors.TLSError),
    "read timeout": (lambda url: url, Delay(1.5, OK), errors.NetworkTimeoutError),
    "reset before the headers": (lambda url: url, RESET, errors.ResetError),
    "reset mid body": (lambda url: url, cut(OK_BODY, chunked=False), errors.ResetError),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(CONNECTION_FAULTS), ids=list(CONNECTION_FAULTS))
def test_transport_failures_raise_the_connection_error_of_their_cause(make_conn, scripted, canary_key, mode, fault):
    """Sync (httpx) and async (aiohttp) transports report these differently; the class must not differ."""
    host, reply, cls = CONNECTION_FAULTS[fault]
    scripted.script(*([reply] if reply is not None else []))
    hook = AgentChatHook(make_conn("faulty", host(scripted.url)), max_retries=0, timeout=0.5)
    with pytest.raises(AgentChatConnectionError) as info:
        complete(hook, mode)
    hook.close()
    assert type(info.value) is cls and info.value.retryable and info.value.attempts == 1
    assert hook.settings.completions_url in str(info.value) and canary_key not in str(info.value)


NON_STREAM_FAULTS = {
    "reset mid body (content-length)": cut(OK_BODY, chunked=False),
    "reset mid body (chunked)": cut(OK_BODY, chunked=True),
    "slow body past the read timeout": (
        200,
        {"Content-Length": str(len(OK_BODY))},
        [OK_BODY[:10], 1.5, OK_BODY[10:]],
    ),
    "slow headers past the read timeout": Delay(1.5, OK),
    "malformed JSON on a 200": (200, {"Content-Type": "application/json"}, b'{"choices": [{"mess'),
    "HTML page on a 200": (200, {"Content-Type": "text/html"}, b"<html><title>Maintenance</title></html>"),
    "JSON that is not a completion": (200, {}, b'{"status": "ok"}'),
    "JSON list on a 200": (200, {}, b"[1, 2]"),
    "502 HTML from a proxy": (502, {"Content-Type": "text/html"}, b"<html><title>502 Bad Gateway</title></html>"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(NON_STREAM_FAULTS), ids=list(NON_STREAM_FAULTS))
def test_fault_after_the_request_went_out_is_retried(hook_for, scripted, mode, fault):
    hook, sleeps = hook_for(timeout=0.5)
    scripted.script(NON_STREAM_FAULTS[fault], OK)
    result = complete(hook, mode)
    assert result.text == "hi there"
    assert len(scripted.requests) == 2 and result.meta["attempts"] == 2
    assert sleeps.delays == [0.5]


STREAM_FAULTS = {
    "broken before any chunk": (200, SSE_HEADERS, [RESET]),
    "broken after a chunk": (200, SSE_HEADERS, [*sse(chunk("partial", role="assistant")), RESET]),
    "truncated: no [DONE], no finish reason": (200, SSE_HEADERS, sse(chunk("partial", role="assistant"))),
    "empty body": (200, SSE_HEADERS, b""),
    "data that is not JSON": (200, SSE_HEADERS, sse(b"{not json")),
    "slow stream past the read timeout": (200, SSE_HEADERS, [*sse(chunk("slow", role="assistant")), 1.5]),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(STREAM_FAULTS), ids=list(STREAM_FAULTS))
def test_folded_stream_fault_is_retried(hook_for, scripted, mode, fault):
    """send(stream=True) folds the stream itself: nothing reached a caller, so any break is retried."""
    hook, sleeps = hook_for(timeout=0.5)
    scripted.script(STREAM_FAULTS[fault], GOOD_STREAM)
    result = complete(hook, mode, stream=True)
    assert result.text == "good"
    assert len(scripted.requests) == 2 and result.meta["attempts"] == 2
    assert sleeps.delays == [0.5]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "fault", ["broken before any chunk", "empty body", "data that is not JSON"], ids=lambda name: name
)
def test_stream_iterator_retries_a_break_before_its_first_chunk(hook_for, scripted, mode, fault):
    hook, sleeps = hook_for()
    scripted.script(STREAM_FAULTS[fault], GOOD_STREAM)
    received, error = consume_stream(hook, mode)
    assert error is None and received == ["good"]
    assert len(scripted.requests) == 2 and sleeps.delays == [0.5]


@pytest.mark.parametrize("mode", MODES)
def test_stream_iterator_is_never_retried_after_its_first_chunk(hook_for, scripted, mode):
    hook, sleeps = hook_for()
    scripted.script((503, {}, b""), STREAM_FAULTS["broken after a chunk"], GOOD_STREAM)
    received, error = consume_stream(hook, mode)
    assert received == ["partial"] and isinstance(error, StreamError)
    assert len(scripted.requests) == 2 and sleeps.delays == [0.5]
    assert error.attempts == 2


# ------------------------------------------------------------------------------------------ attempts

ATTEMPT_SCRIPTS = {
    "503 until out of retries": ([(503, {}, b"")] * 3, {}, ServerError),
    "reset mid body until out of retries": ([cut(OK_BODY, chunked=False)] * 3, {}, AgentChatConnectionError),
    "malformed 200 until out of retries": ([(200, {}, b"{nope")] * 3, {}, APIError),
    "slow until out of retries": ([Delay(1.5, OK)] * 3, {}, AgentChatConnectionError),
    "truncated stream until out of retries": ([STREAM_FAULTS["empty body"]] * 3, {"stream": True}, StreamError),
    "broken stream until out of retries": (
        [STREAM_FAULTS["broken after a chunk"]] * 3,
        {"stream": True},
        StreamError,
    ),
    "final 400 after a reset mid body": ([cut(OK_BODY, chunked=True), (400, {}, b"{}")], {}, APIError),
    "error event after a 503": (
        [(503, {}, b""), (200, SSE_HEADERS, sse({"error": {"message": "no", "code": "bad"}}))],
        {"stream": True},
        StreamError,
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(ATTEMPT_SCRIPTS), ids=list(ATTEMPT_SCRIPTS))
def test_attempts_on_a_final_error_equal_what_the_server_counted(hook_for, scripted, mode, case):
    replies, params, cls = ATTEMPT_SCRIPTS[case]
    hook, _ = hook_for(max_retries=2, timeout=0.5)
    scripted.script(*replies)
    with pytest.raises(cls) as info:
        complete(hook, mode, **params)
    assert info.value.attempts == len(scripted.requests) == len(replies)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stream", [False, True])
def test_attempts_on_success_equal_what_the_server_counted(hook_for, scripted, mode, stream):
    hook, _ = hook_for(max_retries=4, timeout=0.5)
    good = GOOD_STREAM if stream else OK
    scripted.script((429, {"retry-after-ms": "1"}, b""), cut(OK_BODY, chunked=True), (200, {}, b"<html>"), good)
    result = complete(hook, mode, stream=stream)
    assert result.meta["attempts"] == len(scripted.requests) == 4


# ------------------------------------------------------------------------------------------ shared pause


def _pause_responder(pauses: dict[str, float], release: threading.Event):
    """First sight of a prompt: ``pauses`` says its 429's retry-after; "late" answers once ``release`` is set."""
    seen: set[str] = set()
    lock = threading.Lock()

    def respond(recorded):
        prompt = json.loads(recorded.body)["messages"][0]["content"]
        with lock:
            first = prompt not in seen
            seen.add(prompt)
        if not first or prompt not in pauses:
            return OK
        reply = (429, {"retry-after": str(pauses[prompt])}, b'{"error": {"message": "slow down"}}')
        if prompt == "late":
            release.wait(10)
        return reply

    return respond


def _assert_none_inside_a_pause(requests, pauses: dict[str, float]) -> None:
    """No request reached the server between a 429 going out and the end of the pause it asked for."""
    firsts: dict[str, object] = {}
    for recorded in requests:
        firsts.setdefault(json.loads(recorded.body)["messages"][0]["content"], recorded)
    windows = [(firsts[p].replied_at, firsts[p].replied_at + seconds) for p, seconds in pauses.items()]
    inside = [r for r in requests for start, end in windows if start < r.at < end]
    assert inside == [], "a request reached the server inside another request's 429 pause"


def test_shared_pause_is_rechecked_after_sleeping_sync(scripted, make_conn):
    """ "first" pauses the hook 0.4 s; meanwhile "late" extends it to 1.2 s: nobody may go out at 0.4 s."""
    hook = AgentChatHook(make_conn("pause-sync", scripted.url), retry_policy=RetryPolicy(jitter=lambda: 1))
    pauses = {"first": 0.4, "late": 1.2}
    scripted.script()
    release = threading.Event()
    scripted.responder = _pause_responder(pauses, release)
    results: dict[str, str | None] = {}

    def send(prompt: str) -> None:
        results[prompt] = hook.create_chat_completion([{"role": "user", "content": prompt}]).text

    late = threading.Thread(target=send, args=("late",))
    late.start()
    while len(scripted.requests) < 1:  # "late" is at the server; its 429 waits for release
        time.sleep(0.005)
    first = threading.Thread(target=send, args=("first",))
    first.start()
    while hook.pause_remaining() <= 0:  # "first" got its 429: the hook is paused 0.4 s
        time.sleep(0.005)
    follower = threading.Thread(target=send, args=("follower",))
    follower.start()  # starts sleeping the 0.4 s pause, before "late" extends it
    time.sleep(0.05)
    release.set()
    for thread in (late, first, follower):
        thread.join()
    hook.close()
    assert results == {"late": "hi there", "first": "hi there", "follower": "hi there"}
    _assert_none_inside_a_pause(scripted.requests, pauses)


def test_shared_pause_is_rechecked_after_sleeping_async(scripted, make_conn):
    hook = AgentChatHook(make_conn("pause-async", scripted.url), retry_policy=RetryPolicy(jitter=lambda: 1))
    pauses = {"first": 0.4, "late": 1.2}
    scripted.script()
    release = threading.Event()
    scripted.responder = _pause_responder(pauses, release)

    async def send(prompt: str) -> str | None:
        return (await hook.acreate_chat_completion([{"role": "user", "content": prompt}])).text

    async def run() -> list[str | None]:
        late = asyncio.create_task(send("late"))
        while len(scripted.requests) < 1:
            await asyncio.sleep(0.005)
        first = asyncio.create_task(send("first"))
        while hook.pause_remaining() <= 0:
            await asyncio.sleep(0.005)
        follower = asyncio.create_task(send("follower"))
        await asyncio.sleep(0.05)
        release.set()
        try:
            return await asyncio.gather(late, first, follower)
        finally:
            await hook.aclose()

    assert asyncio.run(run()) == ["hi there"] * 3
    _assert_none_inside_a_pause(scripted.requests, pauses)


def test_before_attempt_runs_once_per_request_sent_and_never_inside_a_pause(scripted, make_conn):
    """The batch takes a rate slot here: waiting out a shared pause or a back-off must not take one."""
    calls: list[tuple[str, int, float]] = []
    hook_box: list[AgentChatHook] = []

    async def before_attempt(attempt: int) -> None:
        calls.append((asyncio.current_task().get_name(), attempt, hook_box[0].pause_remaining()))

    hook = AgentChatHook(
        make_conn("before", scripted.url), retry_policy=RetryPolicy(jitter=lambda: 1), before_attempt=before_attempt
    )
    hook_box.append(hook)
    scripted.script()
    scripted.responder = _pause_responder({"first": 0.3}, threading.Event())

    async def send(prompt: str) -> str | None:
        return (await hook.acreate_chat_completion([{"role": "user", "content": prompt}])).text

    async def run() -> list[str | None]:
        first = asyncio.create_task(send("first"), name="first")
        while hook.pause_remaining() <= 0:
            await asyncio.sleep(0.005)
        others = [asyncio.create_task(send(p), name=p) for p in ("second", "third")]  # start inside the pause
        try:
            return await asyncio.gather(first, *others)
        finally:
            await hook.aclose()

    assert asyncio.run(run()) == ["hi there"] * 3
    assert len(calls) == len(scripted.requests) == 4
    assert sorted((name, attempt) for name, attempt, _ in calls) == [
        ("first", 1),
        ("first", 2),
        ("second", 1),
        ("third", 1),
    ]
    assert all(remaining <= 0 for _, _, remaining in calls)


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("mode", MODES)
def test_a_5xx_nested_100000_deep_is_a_server_error_and_retried(hook_for, scripted, mode):
    hook, sleeps = hook_for()
    scripted.script((503, {"x-request-id": "rid-deep"}, DEEP), OK)
    assert complete(hook, mode).text == "hi there"
    assert len(scripted.requests) == 2 and sleeps.delays == [0.5]
    hook, _ = hook_for(max_retries=0)
    scripted.script((502, {"Content-Type": "application/json"}, b'{"error": ' + DEEP + b"}"))
    with pytest.raises(ServerError) as info:
        complete(hook, mode)
    assert info.value.status == 502 and info.value.retryable


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_event_nested_100000_deep_is_a_stream_error(hook_for, scripted, mode):
    hook, _ = hook_for(max_retries=0)
    scripted.script((200, SSE_HEADERS, sse(chunk("a", role="assistant"), DEEP, b"[DONE]")))
    received, error = consume_stream(hook, mode)
    assert received == ["a"] and type(error) is StreamError
