"""Guard ``POST /api/v2/connections/test`` for ``agentchat`` connections: the stored key never goes elsewhere.

Two jobs, both on the request body before Airflow reads it:

1. **The stored key travels only where the stored connection says.** A test body that names a stored
   connection and leaves the password out (or sends the UI's mask ``***``) makes Airflow fill in the stored
   password (3.1+), while every other field comes from the body. A tester could then keep the host and add
   ``"schema": "http"`` with ``allow_insecure_http`` (or ``verify: false``, another ``ca_bundle``, port or
   type) and the stored key would travel in clear text, or to a server that is not checked. Airflow 3.3 itself
   only compares host and port, 3.1 and 3.2 compare nothing. So when the stored key would be used and any
   field that decides where or how it travels differs from the stored connection, the test is refused (400)
   with the fields named. Refusing rather than quietly using the stored values: a test that reported success
   for settings other than the ones on screen would mislead. A password typed into the test is the tester's
   own key and may go wherever they say. The refusal is given only to callers Airflow would let test (the
   route's own authorization is asked first), so it tells nothing to anyone else.
2. **The Test button works on Airflow 3.3.** Its connection list posts ``"port": Number(connection.port)``,
   and ``Number(null)`` is ``0``; Airflow then sees "another port" and refuses the stored key. ``"port": 0``
   is dropped from ``agentchat`` test bodies (port 0 addresses nothing). Airflow fixed the comparison upstream
   (apache/airflow#73298) after 3.3.2.

Kept import-light (json only at import): plugins are imported by every Airflow process.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

TEST_PATH = "/api/v2/connections/test"
CONN_TYPE = "agentchat"
MASK = "***"
#: Extras that change neither where the key goes nor how it is protected on the way; every other extra must
#: equal the stored one when the stored key is used (an extra unknown today is treated as transport).
HARMLESS_EXTRAS = frozenset(
    {
        "timeout",
        "max_retries",
        "attempt_deadline",
        "max_response_bytes",
        "max_event_bytes",
        "model",
        "prompt_token_price",
        "completion_token_price",
        "cached_prompt_token_price",
        "cache_write_token_price",
        # Limits only slow sending down; the backend holds counters, never the key.
        "requests_per_minute",
        "tokens_per_minute",
        "limit_backend_conn_id",
        "limit_backend_fallback",
    }
)
_FIELDS = ("conn_type", "host", "port", "schema")
_EXTRA_DEFAULTS = {"verify": "true", "allow_insecure_http": "false"}  # what the hook assumes when unset
_MAX_BODY = 1_000_000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


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


def uses_stored_key(data: Mapping[str, Any]) -> bool:
    """Whether Airflow would fill in the stored password: the body names a connection and brings no key."""
    return isinstance(data.get("connection_id"), str) and data.get("password", MASK) == MASK


def _blank(value: Any) -> Any:
    return None if value is None or value == "" else value


def _extra(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {"(extra)": text}  # not JSON: it cannot equal a stored JSON extra
    return value if isinstance(value, dict) else {"(extra)": value}


def _same_extra_value(key: str, asked: Any, stored: Any) -> bool:
    def norm(value: Any) -> Any:
        value = _blank(value)
        if value is None:
            return _EXTRA_DEFAULTS.get(key)
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower()
        return value

    return norm(asked) == norm(stored)


def transport_changes(data: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """The fields of a test body that would send the stored key elsewhere or otherwise than ``stored`` says.

    ``stored`` has ``conn_type``, ``host``, ``port``, ``schema`` and ``extra`` of the stored connection. A field
    the body leaves out keeps its stored value (as Airflow merges them); a masked extra value is the stored one.
    """
    changed = [
        name for name in _FIELDS if name in data and _blank(data[name]) != _blank(stored.get(name))
    ]  # conn_type too: another provider's hook would send the key its own way
    if "extra" in data:
        asked, kept = _extra(data["extra"]), _extra(stored.get("extra"))
        for key in sorted((set(asked) | set(kept)) - HARMLESS_EXTRAS):
            value = kept.get(key) if asked.get(key) == MASK else asked.get(key)
            if not _same_extra_value(key, value, kept.get(key)):
                changed.append(f"extra.{key}")
    return changed


def _stored(conn_id: str) -> dict[str, Any] | None:
    """The stored connection's transport fields, or ``None`` when it does not exist or holds no key."""
    from airflow.models import Connection

    from airflow_agentchat.compat import airflow_not_found_exception

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except airflow_not_found_exception():
        return None
    if not conn.password:
        return None
    return {
        "conn_type": conn.conn_type,
        "host": conn.host,
        "port": conn.port,
        "schema": conn.schema,
        "extra": conn.extra,
    }


def refusal(conn_id: str, changed: list[str]) -> str:
    return (
        f"Test of {conn_id!r} refused: it would use the stored access key, and {', '.join(changed)} "
        f"{'differs' if len(changed) == 1 else 'differ'} from the stored connection. "
        "The stored key only travels where and how the stored connection "
        "says. Save the connection first, or type the access key into the password field to test these "
        "settings with it."
    )


async def _may_test(app: App, scope: Scope) -> bool:
    """Whether Airflow's own authorization of the test route lets this caller in.

    Asked with an empty body: the route's dependencies answer 401/403 before the body is validated (422), and
    nothing runs. So the refusal below never reaches a caller who could not have run the test.
    """
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
    probe = {**scope, "headers": [*headers, (b"content-type", b"application/json"), (b"content-length", b"2")]}
    sent = False
    status: list[int] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(probe, receive, send)
    return bool(status) and status[0] not in (401, 403)


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ConnectionTestMiddleware:
    """ASGI middleware on the API server's root app: guards and fixes connection tests (see the module doc)."""

    def __init__(self, app: App) -> None:
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
        if not more and not pending:
            fixed = without_port_zero(body)
            if fixed is not None:
                body = fixed
                headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
                scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
            reason = await self._refusal(scope, body)
            if reason is not None:
                await _answer(send, 400, reason)
                return
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": more}, *pending]

        async def replaying_receive() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replaying_receive, send)

    async def _refusal(self, scope: Scope, body: bytes) -> str | None:
        """Why this test must not run, or ``None``. A body that is not JSON is left to Airflow (422)."""
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict) or not uses_stored_key(data):
            return None
        if not await _may_test(self.app, scope):
            return None  # Airflow answers 401/403 itself; no secrets lookup for such a caller
        from anyio import to_thread

        conn_id = data["connection_id"]
        stored = await to_thread.run_sync(_stored, conn_id)
        if stored is None or CONN_TYPE not in (stored["conn_type"], data.get("conn_type")):
            return None
        changed = transport_changes(data, stored)
        return refusal(conn_id, changed) if changed else None
