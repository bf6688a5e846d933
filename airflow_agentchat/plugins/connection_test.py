"""Let the connection list's Test button work on ``agentchat`` connections with Airflow 3.3's UI.

The Test button in *Admin → Connections* posts the listed connection to ``POST /api/v2/connections/test`` with
``"port": Number(connection.port)``, and ``Number(null)`` is ``0``. An ``agentchat`` connection has no port
(the form hides the field; the endpoint URL carries any port), so the stored port is NULL, the API server sees
a test of "another port" and, since the UI sends the masked password rather than the key, refuses it: 400
"The host or port to test differs from the stored connection". That hits every connection created from the
form, the CLI or ``make ui`` alike, so it cannot be fixed where connections are made. Airflow fixed the
comparison upstream (apache/airflow#73298), after 3.3.2. Until every supported Airflow has that fix, this root
middleware drops ``"port": 0`` from test requests for ``agentchat`` connections before Airflow reads them.
Port 0 addresses nothing, so leaving it out changes no destination; the host check and every other rule of the
route stay Airflow's.

Kept import-light (json only): plugins are imported by every Airflow process.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

TEST_PATH = "/api/v2/connections/test"
CONN_TYPE = "agentchat"
_MAX_BODY = 1_000_000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def without_port_zero(body: bytes) -> bytes | None:
    """``body`` without ``"port": 0`` when it tests an ``agentchat`` connection; ``None`` when it stays as is."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("conn_type") != CONN_TYPE:
        return None
    port = data.get("port")
    if type(port) is not int or port != 0:  # not False, not 0.0: only what Number(null) produces
        return None
    del data["port"]
    return json.dumps(data).encode()


class PortZeroTestMiddleware:
    """ASGI middleware on the API server's root app: applies :func:`without_port_zero` to connection tests."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith(TEST_PATH):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        pending: list[Message] = []  # a disconnect met while reading, replayed after the body
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                pending.append(message)
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if not message.get("more_body", False) or size > _MAX_BODY:
                break
        body = b"".join(chunks)
        more = size > _MAX_BODY
        fixed = None if more or pending else without_port_zero(body)
        if fixed is not None:
            body = fixed
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": more}, *pending]

        async def replaying_receive() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replaying_receive, send)
