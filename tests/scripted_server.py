"""A tiny HTTP/1.1 server on 127.0.0.1 that answers from a script, for tests of exact wire behaviour.

Each scripted reply is ``(status, headers, body)``; ``body`` may be ``bytes`` or a list of byte pieces sent with
a flush between them, and the special reply ``RESET`` closes the socket without answering. Every request is
recorded (method, path, headers, body, arrival time), so tests can assert what reached the server and when.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RESET = "RESET"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class ScriptedServer:
    replies: deque = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    default: Any = None

    def __post_init__(self) -> None:
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                script.requests.append(
                    Recorded(
                        self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                    )
                )
                reply = script.replies.popleft() if script.replies else script.default
                if reply is None:
                    reply = (500, {}, b'{"error": {"message": "no scripted reply"}}')
                if reply == RESET:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.close_connection = True
                    self.connection.close()
                    return
                status, headers, payload = reply
                pieces = payload if isinstance(payload, list) else [payload]
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if isinstance(payload, list):
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for piece in pieces:
                        if piece == RESET:
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        time.sleep(0.005)
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
        self.replies.extend(replies)
