"""Errors raised by airflow-agentchat.

Every error is an ``AirflowException``, so a task that lets one escape fails the usual way. The hierarchy
says what went wrong and therefore what a caller can do about it::

    AgentChatError                      base class of everything below
    ├── InvalidRequestError             the request broke a rule of the reference; nothing was sent
    ├── AgentChatConnectionError        no HTTP answer: DNS, refused, TLS, timeout, reset
    ├── APIError                        the server answered with an error status
    │   ├── AuthenticationError         401 / 403: the access key is wrong or lacks rights
    │   ├── NotFoundError               404: the endpoint URL does not serve chat completions
    │   ├── RateLimitError              429 (``insufficient_quota`` is final, the rest are retried)
    │   ├── ServerError                 5xx
    │   └── InvalidResponseError        a 2xx whose body is not a chat completion
    └── StreamError                     a stream broke: an error event, bad JSON, or it ended early
        └── TruncatedStreamError        the stream ended without ``[DONE]`` or a finish reason

``retryable`` says whether sending the same request again may succeed; the hook's retry loop asks nothing else.

No error carries the access key: every string taken from a response (message, code, type, param, request id,
the text of an error event or of a transport error) goes through :func:`redact` when the error is built, so
the key cannot reach ``str``, ``repr``, an attribute, a log line or an output file even when a server echoes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowException

_MAX_MESSAGE = 500


class AgentChatError(AirflowException):
    """Base class of every error this provider raises.

    ``attempts`` is how many times the hook sent the request before giving up (0: nothing was sent), counting
    every request the server could have seen. ``retryable``: sending the same request again may succeed.
    """

    attempts: int = 0
    retryable: bool = False


class InvalidRequestError(AgentChatError, ValueError):
    """The request breaks a rule of the reference; raised before anything is sent.

    ``errors`` holds one ``(field, rule)`` pair per problem, with ``field`` in dotted form
    (``messages[0].role``), so a UI can point at the field.
    """

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        lines = "; ".join(f"{field}: {rule}" for field, rule in errors)
        super().__init__(f"Invalid chat completion request: {lines}")


class AgentChatConnectionError(AgentChatError):
    """The server could not be reached, or the connection broke or timed out before the answer was complete."""

    retryable = True


class APIError(AgentChatError):
    """The server answered with an error status.

    Carries what a person needs to act: HTTP ``status``, the server's ``code`` and ``message``, and the
    ``request_id`` to quote to the provider's support.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        error_type: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ):
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type
        self.param = param
        self.request_id = request_id
        self.retry_after = retry_after
        parts = [f"HTTP {status}"]
        if code:
            parts.append(f"code={code}")
        if param:
            parts.append(f"param={param}")
        if request_id:
            parts.append(f"request_id={request_id}")
        super().__init__(f"{message} ({', '.join(parts)})")

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again may succeed: 408, 409, 429 (not ``insufficient_quota``), 5xx."""
        if self.status == 429:
            return self.code != "insufficient_quota"
        return self.status in (408, 409) or self.status >= 500


class AuthenticationError(APIError):
    """401 or 403: the agent access key is missing, wrong, or not allowed on this agent."""


class NotFoundError(APIError):
    """404: the endpoint does not serve ``/api/v1/chat/completions`` (check the connection host)."""


class RateLimitError(APIError):
    """429: too many requests, or ``insufficient_quota`` (final)."""


class ServerError(APIError):
    """5xx from the server or a proxy in front of it."""


class InvalidResponseError(APIError):
    """A 2xx whose body is not a chat completion (a proxy's page, a cut or garbled body): retried."""

    @property
    def retryable(self) -> bool:
        return True


class StreamError(AgentChatError):
    """A streamed response broke after it started.

    A break, a timeout or data that is not a chunk is ``retryable``; an error event is the server's answer
    and is not. The hook retries only while no chunk was delivered to the caller.
    """

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class TruncatedStreamError(StreamError):
    """The stream ended without ``data: [DONE]`` and without a finish reason on every choice."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


def redact(text: str, secret: str | None) -> str:
    """Remove ``secret`` from ``text`` (a server may echo the key back in an error message).

    Secrets shorter than four characters are left alone, like Airflow's own masker does: replacing every "a"
    would garble messages without protecting anything.
    """
    if secret and len(secret) >= 4 and secret in text:
        text = text.replace(secret, "***")
    return text


def redact_optional(text: str | None, secret: str | None) -> str | None:
    """:func:`redact` for a field that may be absent."""
    return None if text is None else redact(text, secret)


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
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    message, code, error_type, param, request_id = _describe(body)
    if message is None:
        message = _summarise_text(text) or _default_reason(status)
    request_id = request_id or headers.get("x-request-id") or headers.get("request-id")
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
