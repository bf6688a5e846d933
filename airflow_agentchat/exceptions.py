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

No error carries the access key: :mod:`airflow_agentchat.wire_errors` builds these errors from what came over
the wire and redacts every string it takes from a response (message, code, type, param, request id, the text of
an error event or of a transport error), so the key cannot reach ``str``, ``repr``, an attribute, a log line or
an output file even when a server echoes it.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException


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


def __getattr__(name: str) -> object:
    # batch/ still imports redact from here; it moved to wire_errors with the rest of the response parsing.
    if name == "redact":
        from airflow_agentchat.wire_errors import redact

        return redact
    raise AttributeError(name)
