"""Errors built from what came over the wire: error bodies of any shape and transport failures, key removed.

Kept apart from :mod:`airflow_agentchat.exceptions` (the hierarchy only) because reading a response is the
wire's business: the hook uses it for error statuses and the stream reader for error events.

A transport failure becomes a connection-error subclass chosen by the *type* of its cause (``socket.gaierror``,
``ssl.SSLError``, ``ConnectionRefusedError``, ``TimeoutError``, ``ConnectionResetError``), never by words in its
message. httpx's own type is not enough: the aiohttp transport reports a refused, reset or unresolvable host as
``httpx.ConnectTimeout``, and only the cause it chains says which it was.

Every string taken from a response goes through :func:`~airflow_agentchat.redaction.redact` before it becomes
part of an error, so a server that echoes the key back cannot put it in ``str``, ``repr``, an attribute, a log
line or an output file.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from airflow_agentchat.exceptions import (
    AgentChatConnectionError,
    APIError,
    AuthenticationError,
    DNSError,
    NetworkTimeoutError,
    NotFoundError,
    RateLimitError,
    RefusedError,
    ResetError,
    ServerError,
    TLSError,
)
from airflow_agentchat.redaction import redact, redact_optional

_MAX_MESSAGE = 500


def _first_str(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    return None


def _describe(body: Any) -> tuple[str | None, str | None, str | None, str | None, str | None]:
    """(message, code, type, param, request_id) from any of the error shapes agent endpoints and proxies send."""
    if not isinstance(body, Mapping):
        return None, None, None, None, None
    request_id = _first_str(body.get("request_id"))
    error = body.get("error")
    if isinstance(error, Mapping):
        return (
            _first_str(error.get("message")),
            _first_str(error.get("code")),
            _first_str(error.get("type")),
            _first_str(error.get("param")),
            request_id or _first_str(error.get("request_id")),
        )
    if isinstance(error, str):
        return error, _first_str(body.get("code")), None, None, request_id
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail, None, None, None, request_id
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts) or None, None, None, None, request_id
    return (
        _first_str(body.get("message")),
        _first_str(body.get("code"), body.get("id")),
        None,
        None,
        request_id,
    )


_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-litellm-call-id")


def request_id_from_headers(headers: Mapping[str, str]) -> str | None:
    """The id to quote to support: ``x-request-id``, ``request-id``, else the call id a LiteLLM proxy sends."""
    return next((headers[name] for name in _REQUEST_ID_HEADERS if headers.get(name)), None)


def load_json(text: str | bytes) -> Any:
    """Parse JSON from the wire; anything unparsable, nesting too deep included, raises ``ValueError``.

    ``json.loads`` recurses once per level: a body nested 100,000 deep raises ``RecursionError``, which is
    not an error about the data. Error bodies and stream events are both read through here.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    secret: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """Build the right :class:`APIError` subclass from an error response of any shape.

    Reads ``{"error": {...}}``, ``{"error": "text"}``, ``{"id": ..., "message": ..., "request_id": ...}``,
    ``{"detail": [...] | "text"}`` and non-JSON bodies (an HTML 502 page from a proxy becomes its first line
    of text, not a wall of markup).
    """
    text = content.decode("utf-8", errors="replace")
    try:
        body = load_json(text) if text.strip() else None
    except ValueError:
        body = None
    message, code, error_type, param, request_id = _describe(body)
    if message is None:
        message = _summarise_text(text) or _default_reason(status)
    request_id = request_id or request_id_from_headers(headers)
    cls: type[APIError]
    if status in (401, 403):
        cls = AuthenticationError
    elif status == 404:
        cls = NotFoundError
    elif status == 429:
        cls = RateLimitError
    elif status >= 500:
        cls = ServerError
    else:
        cls = APIError
    # Redact before cutting, so a key that straddles the cut cannot leak in part.
    return cls(
        status,
        redact(message, secret)[:_MAX_MESSAGE],
        code=redact_optional(code, secret),
        error_type=redact_optional(error_type, secret),
        param=redact_optional(param, secret),
        request_id=redact_optional(request_id, secret),
        retry_after=retry_after,
    )


def _summarise_text(text: str) -> str:
    import re

    title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title:
        return " ".join(title.group(1).split())
    plain = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    return plain[:200]


def _default_reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP error {status}"


# First match wins, tried on each exception of the cause chain from the outside in.
_BY_CAUSE: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], type[AgentChatConnectionError]], ...] = (
    (socket.gaierror, DNSError),
    ((ssl.SSLError, ssl.CertificateError), TLSError),
    (ConnectionRefusedError, RefusedError),
    # asyncio.TimeoutError (and aiohttp's ServerTimeoutError under it) is TimeoutError from Python 3.11 on,
    # a class of its own on 3.10.
    ((TimeoutError, asyncio.TimeoutError), NetworkTimeoutError),
    ((ConnectionResetError, ConnectionAbortedError, BrokenPipeError), ResetError),
    # Raised by httpx itself with no OS error behind them.
    (httpx.PoolTimeout, NetworkTimeoutError),
    ((httpx.ReadError, httpx.WriteError, httpx.CloseError, httpx.RemoteProtocolError), ResetError),
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def connection_error_class(exc: BaseException) -> type[AgentChatConnectionError]:
    """The connection-error subclass a transport failure is, from the types in its cause chain."""
    aiohttp = sys.modules.get("aiohttp")  # loaded when the async transport is; only then can its errors occur
    for cause in _causes(exc):
        for types, cls in _BY_CAUSE:
            if isinstance(cause, types):
                return cls
        if aiohttp is not None and isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
            return ResetError  # a disconnect, or garbage where the status line should be (httpx: RemoteProtocolError)
    return AgentChatConnectionError


def is_transport_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the transport failing: httpx's own errors, or one the aiohttp transport lets through
    unmapped (a status line that is not HTTP raises aiohttp's ``ClientResponseError`` as it is)."""
    if isinstance(exc, httpx.TransportError):
        return True
    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(exc, aiohttp.ClientError)


def connection_error(exc: BaseException, url: str, *, secret: str | None) -> AgentChatConnectionError:
    """The error to raise for a transport failure talking to ``url`` (its text redacted)."""
    cls = connection_error_class(exc)
    what = cls.what or type(exc).__name__
    return cls(f"{what} talking to {url}: {redact(str(exc) or type(exc).__name__, secret)}")
