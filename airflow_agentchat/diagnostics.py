"""What a connection test says: one line a person can act on, for each way a request can end.

Kept beside :mod:`airflow_agentchat.wire_errors` (which builds the errors) and apart from the hook (which
only sends the test request), so the wording can be read and changed in one place. The text is chosen by
the error's class, never by words in its message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_agentchat.exceptions import (
    AgentChatConnectionError,
    AgentChatError,
    APIError,
    AuthenticationError,
    DNSError,
    NetworkTimeoutError,
    NotFoundError,
    RateLimitError,
    RefusedError,
    ResetError,
    ResponseTooLargeError,
    TLSError,
)

if TYPE_CHECKING:
    from airflow_agentchat.models import ChatCompletion


def connected(url: str, elapsed_ms: float, completion: ChatCompletion) -> str:
    """The message of a test that got an answer."""
    usage = completion.usage_dict()
    return (
        f"Connected to {url} in {elapsed_ms:.0f} ms: model {completion.model or '(unnamed)'} answered, "
        f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens."
    )


def failed(url: str, exc: AgentChatError) -> str:
    """The message of a test that ended with ``exc``."""
    if isinstance(exc, AuthenticationError):
        return f"Access key rejected by {url} ({_short(exc)}): check the connection's Agent access key."
    if isinstance(exc, NotFoundError):
        return (
            f"{url} answered 404 ({_short(exc)}): the host is not an agent endpoint; set it to the "
            "agent's URL, e.g. https://<id>.agents.do-ai.run."
        )
    if isinstance(exc, RateLimitError):
        return f"Rate limited by {url} ({_short(exc)}): the endpoint is reachable; try again later."
    if isinstance(exc, APIError):
        return f"{url} answered with an error: {exc}"
    if isinstance(exc, AgentChatConnectionError):
        advice = next((_CONNECTION_ADVICE[cls] for cls in type(exc).__mro__ if cls in _CONNECTION_ADVICE), None)
        return (advice or "Cannot reach {url}: {text}").format(url=url, text=exc)
    if isinstance(exc, ResponseTooLargeError):
        return f"{url} answered with more than the connection allows: {exc}."
    return f"Request to {url} failed: {exc}"


def _short(exc: APIError) -> str:
    parts = [f"HTTP {exc.status}"]
    if exc.code and exc.code != str(exc.status):
        parts.append(str(exc.code))
    if exc.message:
        parts.append(exc.message[:120])
    if exc.request_id:
        parts.append(f"request id {exc.request_id}")
    return ", ".join(parts)


_CONNECTION_ADVICE: dict[type[AgentChatConnectionError], str] = {
    TLSError: "TLS failed for {url}: {text}. Set the connection's CA bundle, or verify=false for a test server.",
    DNSError: "Cannot resolve the host of {url}: check the connection's Agent endpoint.",
    RefusedError: "Cannot connect to {url} (connection refused): is the endpoint up and the port right?",
    NetworkTimeoutError: "Timed out talking to {url}: the endpoint is slow or unreachable from this worker.",
    ResetError: "{url} closed the connection before answering: {text}. A proxy or firewall may be in the way.",
}
