"""Errors raised by airflow-agentchat.

Every error is an ``AirflowException``, so a task that lets one escape fails the usual way. The hierarchy
says what went wrong and therefore what a caller can do about it (``kind`` in brackets)::

    AgentChatError                      base class of everything below [agentchat_error]
    ├── InvalidRequestError             the request broke a rule of the reference; nothing was sent [invalid_request]
    ├── AgentChatConnectionError        no HTTP answer [connection_error]
    │   ├── DNSError                    the endpoint's host name does not resolve [dns_error]
    │   ├── RefusedError                nothing listens on the endpoint's host and port [connection_refused]
    │   ├── TLSError                    the TLS handshake or certificate check failed [tls_error]
    │   ├── NetworkTimeoutError         connecting, sending or reading took longer than the timeout [timeout]
    │   └── ResetError                  the connection broke before the answer was complete [connection_reset]
    ├── APIError                        the server answered with an error status [api_error]
    │   ├── AuthenticationError         401 / 403: the access key is wrong or lacks rights [authentication_error]
    │   ├── NotFoundError               404: the endpoint URL does not serve chat completions [not_found]
    │   ├── RateLimitError              429 (``insufficient_quota`` is final, the rest are retried) [rate_limited]
    │   ├── ServerError                 5xx [server_error]
    │   └── InvalidResponseError        a 2xx whose body is not a chat completion [invalid_response]
    └── StreamError                     a stream broke: an error event, bad JSON, or it ended early [stream_error]
        └── TruncatedStreamError        the stream ended without ``[DONE]`` or a finish reason [truncated_stream]

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

from airflow.sdk.exceptions import AirflowException

_BY_KIND: dict[str, type[AgentChatError]] = {}


class AgentChatError(AirflowException):
    """Base class of every error this provider raises.

    ``attempts`` is how many times the hook sent the request before giving up (0: nothing was sent), counting
    every request the server could have seen. ``retryable``: sending the same request again may succeed.
    """

    kind: ClassVar[str] = "agentchat_error"
    attempts: int = 0
    retryable: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must name its own kind")
        _BY_KIND[cls.kind] = cls

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


class InvalidRequestError(AgentChatError, ValueError):
    """The request breaks a rule of the reference; raised before anything is sent.

    ``errors`` holds one ``(field, rule)`` pair per problem, with ``field`` in dotted form
    (``messages[0].role``), so a UI can point at the field.
    """

    kind = "invalid_request"

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        lines = "; ".join(f"{field}: {rule}" for field, rule in errors)
        super().__init__(f"Invalid chat completion request: {lines}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "errors": [list(pair) for pair in self.errors]}

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls([(str(field), str(rule)) for field, rule in data.get("errors") or []])


class AgentChatConnectionError(AgentChatError):
    """The server could not be reached, or the connection broke or timed out before the answer was complete."""

    kind = "connection_error"
    retryable = True
    what: ClassVar[str | None] = None  # how the error text starts; the subclasses know what happened


class DNSError(AgentChatConnectionError):
    """The host name of the endpoint does not resolve (a typo in the host, or no DNS from this worker)."""

    kind = "dns_error"
    what = "Cannot resolve the host"


class RefusedError(AgentChatConnectionError):
    """The host refused the connection: nothing listens on that port, or a firewall rejects it."""

    kind = "connection_refused"
    what = "Connection refused"


class TLSError(AgentChatConnectionError):
    """The TLS handshake failed: an untrusted certificate, or TLS spoken to a plain-HTTP port."""

    kind = "tls_error"
    what = "TLS failed"


class NetworkTimeoutError(AgentChatConnectionError):
    """Connecting, sending or reading took longer than the connection's timeout."""

    kind = "timeout"
    what = "Timed out"


class ResetError(AgentChatConnectionError):
    """The connection was closed or reset before the whole answer arrived."""

    kind = "connection_reset"
    what = "Connection reset"


class APIError(AgentChatError):
    """The server answered with an error status.

    Carries what a person needs to act: HTTP ``status``, the server's ``code`` and ``message``, and the
    ``request_id`` to quote to the provider's support.
    """

    kind = "api_error"

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


class AuthenticationError(APIError):
    """401 or 403: the agent access key is missing, wrong, or not allowed on this agent."""

    kind = "authentication_error"


class NotFoundError(APIError):
    """404: the endpoint does not serve ``/api/v1/chat/completions`` (check the connection host)."""

    kind = "not_found"


class RateLimitError(APIError):
    """429: too many requests, or ``insufficient_quota`` (final)."""

    kind = "rate_limited"


class ServerError(APIError):
    """5xx from the server or a proxy in front of it."""

    kind = "server_error"


class InvalidResponseError(APIError):
    """A 2xx whose body is not a chat completion (a proxy's page, a cut or garbled body): retried."""

    kind = "invalid_response"

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return True


class StreamError(AgentChatError):
    """A streamed response broke after it started.

    A break, a timeout or data that is not a chunk is ``retryable``; an error event is the server's answer
    and is not. The hook retries only while no chunk was delivered to the caller.
    """

    kind = "stream_error"

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable

    @classmethod
    def _rebuild(cls, data: dict[str, Any]) -> AgentChatError:
        return cls(str(data.get("message") or ""), retryable=bool(data.get("retryable")))


class TruncatedStreamError(StreamError):
    """The stream ended without ``data: [DONE]`` and without a finish reason on every choice."""

    kind = "truncated_stream"

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message, retryable=retryable)
