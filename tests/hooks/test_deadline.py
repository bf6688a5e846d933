"""The attempt deadline (hooks/deadline.py) against a hostile server of the test's own (a raw socket on
127.0.0.1): a trickling server ends at the deadline on all four paths, and the default deadline."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

from airflow_agentchat.exceptions import AgentChatError, NetworkTimeoutError
from airflow_agentchat.hooks.agent_chat import AgentChatHook

USER = [{"role": "user", "content": "hello"}]


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


ALL_PATHS = ["sync", "async", "stream", "astream"]


# ------------------------------------------------------------------------------------------ deadline


def trickle(prefix: bytes, every: float, count: int = 1000) -> Iterator[bytes | float]:
    """``prefix`` at once, then one byte at a time, ``every`` seconds apart (each read well inside the timeout)."""
    yield prefix
    for _ in range(count):
        yield every
        yield b"a"


TRICKLES = {
    "headers": lambda: trickle(b"HTTP/1.1 200 OK\r\nX-Slow: ", 0.3),
    "body": lambda: trickle(head(Content_Length="100000") + b'{"id": "x", ', 0.3),
    "stream": lambda: trickle(head("text/event-stream") + b": keep-alive\n", 0.3),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ALL_PATHS)
@pytest.mark.parametrize("where", list(TRICKLES))
def test_a_trickling_server_ends_at_the_attempt_deadline(hostile, make_conn, mode, where):
    hostile.script = TRICKLES[where]
    hook = AgentChatHook(make_conn("slow", hostile.url, attempt_deadline=1.5), timeout=1.0, max_retries=0)
    error = run(hook, mode)
    assert isinstance(error, NetworkTimeoutError), error
    assert "deadline of 1.5 s" in str(error) and "attempt_deadline" in str(error) and error.retryable


def test_the_deadline_defaults_to_four_read_timeouts(make_conn):
    hook = AgentChatHook(make_conn("derived", "http://127.0.0.1:1"), timeout=7)
    assert hook.settings.deadline == 28
    hook = AgentChatHook(make_conn("given", "http://127.0.0.1:1", attempt_deadline="90"), timeout=7)
    assert hook.settings.deadline == 90
