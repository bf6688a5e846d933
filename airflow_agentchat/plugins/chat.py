"""What the Agent Chat page needs besides routes: connection listing, result shaping, the operator snippet.

Kept apart from :mod:`.app` so it can be tested without an API server. Nothing here ever returns a
connection's password or extras: the listing exposes the id, a credential-free endpoint, the description,
the default model and *whether* a key is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_agentchat.exceptions import AgentChatError, APIError, InvalidRequestError

CONN_TYPE = "agentchat"
_SNIPPET_WIDTH = 100
_ENV_PREFIX = "AIRFLOW_CONN_"


# ------------------------------------------------------------------------------------------------ connections


def public_endpoint(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """The connection host as a person may see it: scheme, host, port and path, never userinfo or query.

    Why: a host like ``https://user:key@agent`` would otherwise hand the key to the browser.
    """
    host = (host or "").strip()
    if not host:
        return ""
    if "://" not in host:
        host = f"{schema if schema in ('http', 'https') else 'https'}://{host}"
    try:
        parts = urlsplit(host)
        hostname = parts.hostname or ""
        shown_port = parts.port or port
    except ValueError:
        return "(unparsable host)"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    netloc = f"{hostname}:{shown_port}" if shown_port else hostname
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def _summary(conn_id: str, source: str, conn: Any) -> dict[str, Any]:
    try:
        extra = conn.extra_dejson or {}
    except Exception:
        extra = {}
    model = extra.get("model") if isinstance(extra, Mapping) else None
    return {
        "conn_id": conn_id,
        "source": source,
        "endpoint": public_endpoint(conn.host, conn.schema, conn.port),
        "description": (conn.description or "")[:300],
        "model": model if isinstance(model, str) else None,
        "has_key": bool(conn.password),
    }


def _db_connections() -> list[dict[str, Any]]:
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(Connection).where(Connection.conn_type == CONN_TYPE)).all()
        return [_summary(row.conn_id, "database", row) for row in rows]


def _env_connections(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """``AIRFLOW_CONN_*`` connections of type agentchat; they exist for the API server but not in its DB."""
    from airflow.models import Connection

    found = []
    for name, value in environ.items():
        if not name.startswith(_ENV_PREFIX) or not value:
            continue
        conn_id = name[len(_ENV_PREFIX) :].lower()
        value = value.strip()
        try:
            if value.startswith("{"):
                data = json.loads(value)
                if data.get("conn_type") != CONN_TYPE:
                    continue
                conn = Connection.from_json(value, conn_id=conn_id)
            else:
                if not value.startswith(f"{CONN_TYPE}://"):
                    continue
                conn = Connection(conn_id=conn_id, uri=value)
        except Exception:
            continue  # a malformed variable is Airflow's to report, not ours
        found.append(_summary(conn_id, "environment", conn))
    return found


def list_connections(environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every ``agentchat`` connection the API server can see: metadata DB first, then environment variables.

    Other secrets backends cannot be listed; the page lets a user type any connection id.
    """
    result: dict[str, dict[str, Any]] = {}
    for item in _env_connections(os.environ if environ is None else environ):
        result[item["conn_id"]] = item
    for item in _db_connections():
        result.setdefault(item["conn_id"], item)  # Airflow reads env vars before the DB: the env one wins
    return sorted(result.values(), key=lambda item: (item["conn_id"] != "agentchat_default", item["conn_id"]))


# ------------------------------------------------------------------------------------------------ results


def invalid_payload(error: InvalidRequestError) -> dict[str, Any]:
    """``{"ok": false, "errors": [{"field", "rule"}]}``: what the form needs to point at each bad field."""
    return {"ok": False, "errors": [{"field": field, "rule": rule} for field, rule in error.errors]}


def error_payload(error: AgentChatError) -> dict[str, Any]:
    """An error from the hook as data; its text is already free of the key (the hook redacts it)."""
    detail: dict[str, Any] = {
        "kind": error.kind,
        "retryable": error.retryable,
        "message": str(error),
        "attempts": error.attempts,
    }
    if isinstance(error, APIError):
        detail.update(status=error.status, code=error.code, request_id=error.request_id, server_message=error.message)
    return {"ok": False, "error": detail}


def completion_payload(completion: Any, *, latency_ms: float | None = None) -> dict[str, Any]:
    """The parts of a ``ChatCompletion`` the page shows, plus the raw response."""
    raw = completion.to_dict()
    meta = dict(completion.meta or {})
    if latency_ms is not None:
        meta["latency_ms"] = round(latency_ms, 1)
    return {
        "ok": True,
        "text": completion.text,
        "texts": completion.texts,
        "finish_reason": completion.finish_reason,
        "tool_calls": [call.model_dump(mode="json", exclude_none=True) for call in completion.tool_calls],
        "retrieval": raw.get("retrieval"),
        "functions": raw.get("functions"),
        "guardrails": raw.get("guardrails"),
        "citations": raw.get("citations"),
        "model": completion.model,
        "usage": completion.usage_dict(),
        "meta": meta,
        "raw": raw,
    }


# ------------------------------------------------------------------------------------------------ snippet


def _literal(value: Any, indent: int, column: int) -> str:
    """``value`` as Python source starting at ``column`` of a line indented by ``indent``.

    What fits in the line stays on it; a longer dict or list gets one item per line, each nested level four
    spaces deeper and its closing bracket back at the level's indent (the layout black gives), so a pasted
    ``tools=`` list reads like hand-written code.
    """
    flat = repr(value)
    if column + len(flat) <= _SNIPPET_WIDTH or not isinstance(value, (dict, list)) or not value:
        return flat
    inner = indent + 4
    pad = " " * inner
    if isinstance(value, dict):
        lines = [f"{pad}{key!r}: {_literal(item, inner, inner + len(repr(key)) + 2)}," for key, item in value.items()]
        return "{\n" + "\n".join(lines) + "\n" + " " * indent + "}"
    lines = [f"{pad}{_literal(item, inner, inner)}," for item in value]
    return "[\n" + "\n".join(lines) + "\n" + " " * indent + "]"


def operator_snippet(conn_id: str, request: Mapping[str, Any]) -> str:
    """Python for a DAG that sends the same request with ``AgentChatCompletionOperator``.

    ``request`` is the validated request as ``model_dump(exclude_unset=True)`` gives it (``extra_body`` kept
    apart), so the snippet names exactly what the user set. A lone system message followed by one user message
    becomes ``system_prompt=`` / ``prompt=``, the way DAG authors write it.
    """
    params = {key: value for key, value in request.items() if value is not None}
    messages = list(params.pop("messages", []))
    args: list[tuple[str, Any]] = [("task_id", "ask_agent"), ("agentchat_conn_id", conn_id)]
    simple = [m for m in messages if set(m) <= {"role", "content"} and isinstance(m.get("content"), str)]
    roles = [m["role"] for m in simple]
    if len(simple) == len(messages) and roles in (["user"], ["system", "user"]):
        if roles[0] == "system":
            args.append(("system_prompt", messages[0]["content"]))
        args.append(("prompt", messages[-1]["content"]))
    else:
        args.append(("messages", messages))
    args.extend(params.items())
    lines = [
        "from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator",
        "",
        "ask_agent = AgentChatCompletionOperator(",
    ]
    for key, value in args:
        lines.append(f"    {key}={_literal(value, 4, 5 + len(key))},")
    lines.append(")")
    return "\n".join(lines) + "\n"
