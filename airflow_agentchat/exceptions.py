"""Errors raised by airflow-agentchat.

Every error is an ``AirflowException``, so a task that lets one escape fails the usual way. The hierarchy
says what went wrong and therefore what a caller can do about it (``kind`` in brackets)::

    AgentChatError                      base class of everything below [agentchat_error]
    ├── InvalidRequestError             the request broke a rule of the reference; nothing was sent [invalid_request]
    ├── AgentChatConnectionError        no HTTP answer [connection_error]
    │   ├── DNSError                    the endpoint's host name does not resolve [dns_error]
    │   ├── RefusedError                nothing listens on the endpoint's host and port [connection_refused]
    │   ├── TLSError                    the TLS handshake or certificate check failed [tls_error]
    │   ├── NetworkTimeoutError         a read took longer than the timeout, or the attempt than its deadline [timeout]
    │   └── ResetError                  the connection broke before the answer was complete [connection_reset]
    ├── APIError                        the server answered with an error status [api_error]
    │   ├── AuthenticationError         401 / 403: the access key is wrong or lacks rights [authentication_error]
    │   ├── NotFoundError               404: the endpoint URL does not serve chat completions [not_found]
    │   ├── RateLimitError              429 (``insufficient_quota`` is final, the rest are retried) [rate_limited]
    │   ├── ServerError                 5xx [server_error]
    │   └── InvalidResponseError        a 2xx whose body is not a chat completion [invalid_response]
    ├── StreamError                     a stream broke: an error event, bad JSON, or it ended early [stream_error]
    │   └── TruncatedStreamError        the stream ended without ``[DONE]`` or a finish reason [truncated_stream]
    ├── ContentFilterError              an answer ended in ``finish_reason="content_filter"`` [content_filter]
    ├── ResponseTooLargeError           the answer or one stream event is over its size cap [response_too_large]
    └── RateLimitBackendError           the shared rate-limit store is unreachable [rate_limit_backend_error]

``kind`` is a stable snake_case name for the class (what result files and the UI show); ``retryable`` says
whether sending the same request again may succeed. Callers decide on these two, never on the text.
:meth:`AgentChatError.to_dict` and :meth:`AgentChatError.from_dict` carry an error across a process boundary
as plain JSON (the trigger's event), so the deferred task raises the class the direct one would.

No error carries the access key: :mod:`airflow_agentchat.wire_errors` builds these errors from what came over
the wire and redacts every string it takes from a response (message, code, type, param, request id, the text of
an error event or of a transport error), so the key cannot reach ``str``, ``repr``, an attribute, a log line or
an output file even when a server echoes it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow_agentchat.compat import AirflowException

_BY_KIND: dict[str, type[AgentChatError]] = {}


class AgentChatError(AirflowException):
    """Base class of every error this provider raises.

    ``attempts`` is how many times the hook sent the request before giving up (0: nothing was sent), counting
    every request the server could have seen. ``retryable``: sending the same request again may succeed.
    """

    kind: ClassVar[str] = "agentchat_error"
    attempts: int = 0
    retryable: bool = False

    def __init_subclass__(cls, kind: str | None = None, **kwargs: Any) -> None:
        """Register the subclass under the kind its class statement names: ``class X(Base, kind="x")``."""
        super().__init_subclass__(**kwargs)
        if kind is None:
            raise TypeError(f"{cls.__name__} must name its own kind: class {cls.__name__}(..., kind='...')")
        cls.kind = kind
        _BY_KIND[kind] = cls

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON from which :meth:`from_dict` rebuilds this error, class included."""
        return {"kind": self.kind, "message": str(self), "retryable": self.retryable, "attempts": self.attempts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentChatError:
        """The error :meth:`to_dict` described, as its own class (an unknown kind gives an ``AgentChatError``)."""
        error = _BY_KIND.get(str(data.get("kind")), AgentChatError)._rebuild(data)
        error.attempts = int(data.get("attempts") or 0)
        return error

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls(str(data.get("message") or "agent chat request failed"))


_BY_KIND[AgentChatError.kind] = AgentChatError


class InvalidRequestError(AgentChatError, ValueError, kind="invalid_request"):
    """The request breaks a rule of the reference; raised before anything is sent.

    ``errors`` holds one ``(field, rule)`` pair per problem, with ``field`` in dotted form
    (``messages[0].role``), so a UI can point at the field.
    """

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        lines = "; ".join(f"{field}: {rule}" for field, rule in errors)
        super().__init__(f"Invalid chat completion request: {lines}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "errors": [list(pair) for pair in self.errors]}

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls([(str(field), str(rule)) for field, rule in data.get("errors") or []])


class AgentChatConnectionError(AgentChatError, kind="connection_error"):
    """The server could not be reached, or the connection broke or timed out before the answer was complete.

    ``what`` is how the error text starts: the subclasses, named by the cause, know what happened.
    """

    retryable = True
    what: ClassVar[str | None] = None

    def __init_subclass__(cls, what: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if what is not None:
            cls.what = what


class DNSError(AgentChatConnectionError, kind="dns_error", what="Cannot resolve the host"):
    """The host name of the endpoint does not resolve (a typo in the host, or no DNS from this worker)."""


class RefusedError(AgentChatConnectionError, kind="connection_refused", what="Connection refused"):
    """The host refused the connection: nothing listens on that port, or a firewall rejects it."""


class TLSError(AgentChatConnectionError, kind="tls_error", what="TLS failed"):
    """The TLS handshake failed: an untrusted certificate, or TLS spoken to a plain-HTTP port."""


class NetworkTimeoutError(AgentChatConnectionError, kind="timeout", what="Timed out"):
    """Connecting, sending or one read took longer than the connection's ``timeout``, or the whole attempt
    (headers and body, however slowly they trickle in) longer than its ``attempt_deadline``."""


class ResetError(AgentChatConnectionError, kind="connection_reset", what="Connection reset"):
    """The connection was closed or reset before the whole answer arrived."""


class APIError(AgentChatError, kind="api_error"):
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
        if code and code != str(status):  # proxies often put the status in "code": it would only repeat it
            parts.append(f"code={code}")
        if param:
            parts.append(f"param={param}")
        if request_id:
            parts.append(f"request_id={request_id}")
        super().__init__(f"{message} ({', '.join(parts)})")

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """Whether sending the same request again may succeed: 408, 409, 429 (not ``insufficient_quota``), 5xx."""
        if self.status == 429:
            return self.code != "insufficient_quota"
        return self.status in (408, 409) or self.status >= 500

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "status": self.status,
            "message": self.message,
            "code": self.code,
            "error_type": self.error_type,
            "param": self.param,
            "request_id": self.request_id,
            "retry_after": self.retry_after,
        }

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls(
            int(data.get("status") or 0),
            str(data.get("message") or ""),
            code=data.get("code"),
            error_type=data.get("error_type"),
            param=data.get("param"),
            request_id=data.get("request_id"),
            retry_after=data.get("retry_after"),
        )


class AuthenticationError(APIError, kind="authentication_error"):
    """401 or 403: the agent access key is missing, wrong, or not allowed on this agent."""


class NotFoundError(APIError, kind="not_found"):
    """404: the endpoint does not serve ``/api/v1/chat/completions`` (check the connection host)."""


class RateLimitError(APIError, kind="rate_limited"):
    """429: too many requests, or ``insufficient_quota`` (final)."""


class ServerError(APIError, kind="server_error"):
    """5xx from the server or a proxy in front of it."""


class InvalidResponseError(APIError, kind="invalid_response"):
    """A 2xx whose body is not a chat completion (a proxy's page, a cut or garbled body): retried."""

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return True


class StreamError(AgentChatError, kind="stream_error"):
    """A streamed response broke after it started.

    A break, a timeout or data that is not a chunk is ``retryable``; an error event is the server's answer
    and is not. The hook retries only while no chunk was delivered to the caller.
    """

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls(str(data.get("message") or ""), retryable=bool(data.get("retryable")))


class TruncatedStreamError(StreamError, kind="truncated_stream"):
    """The stream ended without ``data: [DONE]`` and without a finish reason on every choice."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message, retryable=retryable)


class ContentFilterError(AgentChatError, kind="content_filter"):
    """The agent platform's content filter stopped an answer (``finish_reason="content_filter"``).

    A 200 answer, paid for, but not one to use: ``text`` keeps what the agent wrote before it was stopped (may be
    None), ``index`` the choice, ``usage`` the tokens, ``request_id`` the server's id. Not retryable (the same
    prompt is filtered the same way); a batch resends such items only on a rerun with ``retry_failed=True``.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        text: str | None = None,
        index: int = 0,
        request_id: str | None = None,
        usage: dict[str, Any] | None = None,
    ):
        self.text = text
        self.index = index
        self.request_id = request_id
        self.usage = usage
        if message is None:
            where = f"choice {index}" + (f", request_id={request_id}" if request_id else "")
            message = f"The answer was stopped by the content filter (finish_reason=content_filter, {where})"
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "text": self.text,
            "index": self.index,
            "request_id": self.request_id,
            "usage": self.usage,
        }

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls(
            str(data.get("message") or "") or None,
            text=data.get("text"),
            index=int(data.get("index") or 0),
            request_id=data.get("request_id"),
            usage=data.get("usage"),
        )


class ResponseTooLargeError(AgentChatError, kind="response_too_large"):
    """The decoded answer, or one event of a stream, is larger than the connection allows.

    Raised while reading, so an oversized body (or a compressed one that expands) is never held in memory.
    Not retried: the same request would get the same answer. ``setting`` names the connection extra that
    sets the cap (``max_response_bytes`` or ``max_event_bytes``) and ``limit`` its value in bytes.
    """

    def __init__(self, message: str, *, setting: str = "max_response_bytes", limit: int = 0):
        super().__init__(message)
        self.setting = setting
        self.limit = limit

    @classmethod
    def over(cls, what: str, setting: str, limit: int) -> ResponseTooLargeError:
        """The error for ``what`` passing the cap ``setting`` = ``limit`` bytes, in words a person can act on."""
        size = f"{limit / (1 << 20):g} MiB" if limit >= 1 << 20 else f"{limit} bytes"
        return cls(
            f"{what} is larger than {size} (connection extra {setting}={limit}); not read further",
            setting=setting,
            limit=limit,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "setting": self.setting, "limit": self.limit}

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls(
            str(data.get("message") or ""),
            setting=str(data.get("setting") or "max_response_bytes"),
            limit=int(data.get("limit") or 0),
        )


class RateLimitBackendError(AgentChatError, kind="rate_limit_backend_error"):
    """The shared rate-limit backend could not be reached: nothing is sent without the limit (fail closed)."""
