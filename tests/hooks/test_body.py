"""A hostile server costs bounded memory (hooks/body.py), on all four paths (sync, async, stream, astream).

The server here is the test's own: a raw socket on 127.0.0.1 that writes whatever byte pieces a test gives
it (a body far over the cap, a gzip bomb, one endless SSE data line, garbage instead of a status line), and
stops quietly when the client hangs up. Memory is measured with ``tracemalloc``: the peak while the hook reads
must stay far below what the server sent."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import pytest
from hostile_server import head, run

from airflow_agentchat.exceptions import AgentChatError, ResetError, ResponseTooLargeError
from airflow_agentchat.hooks.agent_chat import AgentChatHook

USER = [{"role": "user", "content": "hello"}]
MIB = 1 << 20
PIECE = b"a" * (64 * 1024)


def big_body(total: int) -> Iterator[bytes]:
    """A JSON-looking body of ``total`` bytes, never held whole by the server either."""
    yield head(Content_Length=str(total))
    yield b'{"id": "' + PIECE[: len(PIECE) - 8]
    for _ in range(total // len(PIECE)):
        yield PIECE


def _gzip_bomb(decoded: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(MIB)
    return b"".join([z.compress(zeros) for _ in range(decoded // MIB)] + [z.flush()])


BOMB_DECODED = 256 * MIB


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _gzip_bomb(BOMB_DECODED)


def huge_event(total: int) -> Iterator[bytes]:
    """A stream whose first event is one data line of ``total`` bytes with no line break."""
    yield head("text/event-stream")
    yield b'data: {"id": "' + PIECE
    for _ in range(total // len(PIECE)):
        yield PIECE


def peak_while(call: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


ALL_PATHS = ["sync", "async", "stream", "astream"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ALL_PATHS)
def test_a_body_far_over_the_cap_fails_early_and_is_not_retried(hostile, make_conn, mode):
    sent = 100 * MIB
    hostile.script = lambda: big_body(sent)
    hook = AgentChatHook(make_conn("big", hostile.url, max_response_bytes=MIB, max_event_bytes=MIB), max_retries=3)
    error, peak = peak_while(lambda: run(hook, mode))
    assert isinstance(error, ResponseTooLargeError), error
    assert not error.retryable and error.attempts == 1 and hostile.requests == 1
    assert error.limit == MIB and error.setting in str(error)
    assert peak < 16 * MIB, f"peak {peak / MIB:.0f} MiB while the server sent {sent / MIB:.0f} MiB"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ALL_PATHS)
def test_a_gzip_bomb_is_never_expanded_past_the_cap(hostile, make_conn, bomb, mode):
    content_type = "text/event-stream" if mode in ("stream", "astream") else "application/json"
    hostile.script = lambda: [head(content_type, Content_Encoding="gzip", Content_Length=str(len(bomb))), bomb]
    hook = AgentChatHook(make_conn("bomb", hostile.url, max_response_bytes=2 * MIB), max_retries=3)
    error, peak = peak_while(lambda: run(hook, mode))
    assert isinstance(error, ResponseTooLargeError), error
    assert error.setting in ("max_response_bytes", "max_event_bytes") and error.setting in str(error)
    assert not error.retryable and hostile.requests == 1
    assert peak < 24 * MIB, f"peak {peak / MIB:.0f} MiB for a bomb of {BOMB_DECODED / MIB:.0f} MiB decoded"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["stream", "astream", "sync-folded"])
def test_one_endless_stream_event_fails_at_the_event_cap(hostile, make_conn, mode):
    sent = 100 * MIB
    hostile.script = lambda: huge_event(sent)
    hook = AgentChatHook(make_conn("line", hostile.url, max_event_bytes=MIB), max_retries=3)
    error, peak = peak_while(lambda: _folded(hook) if mode == "sync-folded" else run(hook, mode))
    assert isinstance(error, ResponseTooLargeError), error
    assert error.setting == "max_event_bytes" and "max_event_bytes=1048576" in str(error)
    assert not error.retryable and hostile.requests == 1
    assert peak < 16 * MIB, f"peak {peak / MIB:.0f} MiB for one event of {sent / MIB:.0f} MiB"


def _folded(hook: AgentChatHook) -> object:
    try:
        return hook.create_chat_completion(USER, stream=True)
    except AgentChatError as exc:
        return exc
    finally:
        hook.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ALL_PATHS)
def test_garbage_instead_of_a_status_line_is_a_reset_on_every_path(hostile, make_conn, mode):
    """The aiohttp transport let this through as a bare aiohttp error; httpx calls it a protocol error."""
    hostile.script = lambda: [b"H a\r\n\r\n"]
    hook = AgentChatHook(make_conn("garbage", hostile.url), max_retries=1, timeout=5)
    error = run(hook, mode)
    assert type(error) is ResetError and error.retryable, error
    assert error.attempts == 2 and hostile.requests == 2
