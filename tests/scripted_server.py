"""A tiny HTTP/1.1 server on 127.0.0.1 that answers from a script, for tests of exact wire behaviour.

Each scripted reply is ``(status, headers, body)``; ``body`` may be ``bytes`` or a list of pieces sent with a
flush between them. The faults a real network or proxy produces can be scripted:

* the reply ``RESET`` closes the socket without answering (a reset before the headers);
* ``Delay(seconds, reply)`` waits before sending ``reply`` (a slow response, past the read timeout if long);
* in a list body, the piece ``RESET`` closes the connection mid-body, and a number pauses that many seconds
  (a slow body). A list body is sent chunked, unless the headers give a ``Content-Length`` (then the pieces are
  written raw, so a body can be cut short of its announced length).

``responder``, when set, picks the reply for each request instead of the queue (``responder(recorded)``), for
tests whose concurrent requests arrive in no fixed order. Every request is recorded (method, path, headers,
body, arrival and reply times on ``time.monotonic()``), so tests can assert what reached the server and when.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RESET = "RESET"

# ------------------------------------------------------------------------- what a scripted agent answers

#: The smallest conversation, and a complete answer to it.
USER = [{"role": "user", "content": "hello"}]
OK_BODY = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
).encode()
OK = (200, {"Content-Type": "application/json", "x-request-id": "req-ok"}, OK_BODY)


def sse(*events: object) -> list[bytes]:
    """A list body of SSE events (JSON objects, or raw bytes as given)."""
    out = [b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events]
    return out


def chunk(content: str | None = None, finish: str | None = None, **delta: object) -> dict:
    """One ``chat.completion.chunk`` with this delta."""
    if content is not None:
        delta["content"] = content
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@dataclass(frozen=True)
class Delay:
    seconds: float
    reply: Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    replied_at: float | None = None


@dataclass
class ScriptedServer:
    replies: deque = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    default: Any = None
    responder: Callable[[Recorded], Any] | None = None

    def __post_init__(self) -> None:
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                )
                script.requests.append(recorded)
                if script.responder is not None:
                    reply = script.responder(recorded)
                else:
                    reply = script.replies.popleft() if script.replies else script.default
                while isinstance(reply, Delay):
                    time.sleep(reply.seconds)
                    reply = reply.reply
                if reply is None:
                    reply = (500, {}, b'{"error": {"message": "no scripted reply"}}')
                recorded.replied_at = time.monotonic()
                if reply == RESET:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.close_connection = True
                    self.connection.close()
                    return
                status, headers, payload = reply
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if isinstance(payload, list):
                    raw = any(key.lower() == "content-length" for key in headers)
                    if not raw:
                        self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    for piece in payload:
                        if piece == RESET:
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        if isinstance(piece, int | float):
                            time.sleep(piece)
                            continue
                        self.wfile.write(piece if raw else b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        time.sleep(0.005)
                    if not raw:
                        self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                self.wfile.flush()

            do_GET = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Any) -> None:
        self.replies.clear()
        self.requests.clear()
        self.responder = None
        self.replies.extend(replies)
