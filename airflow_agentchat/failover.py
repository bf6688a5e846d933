"""Which failures another agent could answer: the one rule every failover of this provider follows.

A request goes to the next connection (``fallback_conn_ids``) only when it failed *for good* on its own
connection (the hook's retries are spent, or the error is final there) and the failure belongs to that
connection, not to the request:

* fails over: no HTTP answer (refused, DNS, TLS, reset, timeout or the attempt's deadline), 5xx, 408, 429
  (rate limited or out of quota: the next agent has its own limits), 401 / 403 / 404 (that connection's key or
  endpoint), a garbled 2xx, a stream that broke;
* does not: an invalid request (checked here or refused by the server with 400 / 422), the content filter, an
  answer that fails its output schema after the repair rounds, an answer over the size cap, a cancelled task
  (``on_kill``) and anything that is not an agent chat error (a bug, a budget) -- the next agent would be asked
  the same thing and answer it the same way, or nobody should be asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: ``kind`` of the errors that never fail over, whatever their class says about retrying.
_FINAL_KINDS = frozenset({"invalid_request", "content_filter", "invalid_output", "response_too_large"})
_CONNECTION_STATUSES = frozenset({401, 403, 404, 408, 429})


def fails_over(error: BaseException) -> bool:
    """Whether the same request should go to the next connection after ``error`` (see the module docstring)."""
    from airflow_agentchat.exceptions import (
        AgentChatConnectionError,
        AgentChatError,
        APIError,
        InvalidResponseError,
        StreamError,
    )

    if not isinstance(error, AgentChatError) or error.kind in _FINAL_KINDS:
        return False
    if isinstance(error, AgentChatConnectionError):
        return not str(error).startswith("Request cancelled")  # on_kill: stop, do not ask the next agent
    if isinstance(error, InvalidResponseError):
        return True
    if isinstance(error, APIError):
        return error.status >= 500 or error.status in _CONNECTION_STATUSES
    if isinstance(error, StreamError):
        return error.retryable
    return False


def conn_ids(primary: str, fallbacks: Sequence[str] | str | None) -> list[str]:
    """The primary connection, then the fallbacks in order, each once.

    ``fallbacks`` is a list of connection ids, or (after templating) JSON list text or comma-separated text.
    Raises ``ValueError`` naming ``fallback_conn_ids`` for anything else.
    """
    values: Any = fallbacks
    if isinstance(values, str):
        text = values.strip()
        if text.startswith("["):
            import json

            try:
                values = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"fallback_conn_ids: not a JSON list ({exc})") from None
        else:
            values = [part.strip() for part in text.split(",") if part.strip()]
    if values is None:
        values = []
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f"fallback_conn_ids: a list of connection ids, got {fallbacks!r}")
    out = [primary]
    for value in values:
        if value.strip() not in out:
            out.append(value.strip())
    return out
