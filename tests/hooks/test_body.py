"""A hostile server costs bounded memory (hooks/body.py), on all four paths (sync, async, stream, astream).

The server here is the test's own: a raw socket on 127.0.0.1 that writes whatever byte pieces a test gives
it (a body far over the cap, a gzip bomb, one endless SSE data line, garbage instead of a status line), and
stops quietly when the client hangs up. Memory is measured with ``tracemalloc``: the peak while the hook reads
must stay far below what the server sent."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterable, Iterator

import pytest

from airflow_agentchat.exceptions import AgentChatError, ResetError, ResponseTooLargeError
from airflow_agentchat.hooks.agent_chat import AgentChatHook

USER = [{"role": "user", "content": "hello"}]
MIB = 1 << 20
PIECE = b"a" * (64 * 1024)


class HostileServer:
    """Answers every connection with the pieces ``script()`` returns (floats are pauses in seconds)."""

    def __init__(self) -> None:
        self.script: Callable[[], Iterable[bytes | float]] = lambda: []
        self.requests = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)  # the request: small, one read is enough here
                self.requests += 1
                for piece in self.script():
                    if isinstance(piece, float):
                        time.sleep(piece)
                    else:
                        conn.sendall(piece)
            except OSError:
                pass  # the client hung up: the point of most tests here

    def close(self) -> None:
        self._stop = True
        self._sock.close()


@pytest.fixture()
def hostile():
    server = HostileServer()
    yield server
    server.close()


def head(content_type: str = "application/json", **headers: str) -> bytes:
    lines = [b"HTTP/1.1 200 OK", f"Content-Type: {content_type}".encode(), b"Connection: close"]
    lines += [f"{key.replace('_', '-')}: {value}".encode() for key, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


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


def run(hook: AgentChatHook, mode: str) -> object:
    """One request through the sync, async, stream or astream path; what it returned, or the error."""

    async def arun() -> object:
        try:
            if mode == "async":
                return await hook.acreate_chat_completion(USER)
            return [chunk async for chunk in hook.astream_chat_completion(USER)]
        finally:
            await hook.aclose()

    try:
        if mode == "sync":
            return hook.create_chat_completion(USER)
        if mode == "stream":
            return list(hook.stream_chat_completion(USER))
        return asyncio.run(arun())
    except AgentChatError as exc:
        return exc
    finally:
        hook.close()


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
