"""``cache_prompt``: mark the prefix every request of a task shares so the agent may cache it.

The shared prefix is the leading system (and developer) messages: the operator's ``system_prompt`` and the
output schema's instruction (with the ``json`` strategy; the ``tool`` strategies put the schema in ``tools``,
which come before the messages and so are part of the prefix too). The last text of that prefix gets
``cache_control``; a string content becomes one text part for it. A conversation without a leading system
message has no shared prefix, and nothing is marked.

Pure dict work, no imports: the batch calls it once per item.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

CACHE_TTLS = ("5m", "1h")


def mark_prefix(messages: list[dict[str, Any]], ttl: str | None) -> list[dict[str, Any]]:
    """``messages`` with ``cache_control: {"type": "ephemeral", "ttl": ttl}`` on the last text of the leading
    system/developer messages (a new list; the given messages are not changed). ``ttl=None``: unchanged."""
    if not ttl:
        return messages
    end = 0
    while (
        end < len(messages)
        and isinstance(messages[end], Mapping)
        and messages[end].get("role")
        in (
            "system",
            "developer",
        )
    ):
        end += 1
    if end == 0:
        return messages
    last = messages[end - 1]
    content = last.get("content")
    parts = [content] if isinstance(content, (str, Mapping)) else list(content or [])
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        text: Mapping[str, Any] = {"type": "text", "text": part} if isinstance(part, str) else part
        if not (isinstance(text, Mapping) and text.get("type") == "text"):
            continue
        parts[i] = {**text, "cache_control": {"type": "ephemeral", "ttl": ttl}}
        return [*messages[: end - 1], {**last, "content": parts}, *messages[end:]]
    return messages


def caching(build_request: Callable[..., Any], ttl: str | None) -> Callable[..., Any]:
    """``build_request`` that marks each request's shared prefix first (``build_request`` itself without a ttl)."""
    if not ttl:
        return build_request

    def build(messages: list[dict[str, Any]], **params: Any) -> Any:
        return build_request(mark_prefix(messages, ttl), **params)

    return build
