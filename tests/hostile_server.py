"""A server that writes whatever bytes a test gives it: a raw socket on 127.0.0.1 for the hook's limit tests.

Each connection is answered with the pieces ``script()`` returns (floats are pauses in seconds): a body far over
the cap, a gzip bomb, one endless SSE data line, a byte every few tenths of a second. It stops quietly when the
client hangs up. ``run`` sends one request through any of the hook's four paths.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterable

from airflow_agentchat.exceptions import AgentChatError
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
