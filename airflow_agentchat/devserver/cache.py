"""The dev server's prompt cache: what ``cache_control`` marks is "cached", so usage reports cache writes and reads.

A text part with ``cache_control`` marks a *prefix*: the tools and every message up to and including that
part. The first request carrying a prefix writes it (``cache_created_input_tokens``, by lifetime in
``cache_creation``); a request carrying the same prefix within its lifetime (``ttl`` ``5m``, the default, or
``1h``, counted from the last use) reads it (``cache_read_input_tokens``). With several marks, the longest
prefix still alive is read and the rest up to the last mark is written. Token counts follow the prompt rule of
:mod:`.answers` (a message's text tokens plus one), so reads and writes are part of ``prompt_tokens``.
Requests without ``cache_control`` get no cache fields, as from a server without caching.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from airflow_agentchat.devserver.answers import content_text, count_tokens

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def breakpoints(body: dict[str, Any]) -> list[tuple[str, int, str]]:
    """``(prefix key, prefix tokens, ttl)`` for each ``cache_control`` mark of the request, in order."""
    messages = body.get("messages") or []
    found = []
    head = hashlib.sha256(json.dumps(body.get("tools"), sort_keys=True).encode())
    tokens = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        items = content if isinstance(content, list) else [content]
        for at, part in enumerate(items):
            head.update(json.dumps([message.get("role"), part], sort_keys=True).encode())
            mark = part.get("cache_control") if isinstance(part, dict) else None
            if isinstance(mark, dict):
                text = content_text(items[: at + 1])
                ttl = str(mark["ttl"]) if mark.get("ttl") in TTL_SECONDS else "5m"
                found.append((head.hexdigest(), tokens + 1 + count_tokens(text), ttl))
        tokens += 1 + count_tokens(content_text(content))
    return found


class PromptCache:
    """Prefixes seen and when they expire (``now`` is any monotonic clock in seconds)."""

    def __init__(self) -> None:
        self._expires: dict[str, float] = {}

    def clear(self) -> None:
        self._expires.clear()

    def usage(self, body: dict[str, Any], now: float) -> dict[str, Any] | None:
        """The cache fields of the usage of ``body`` (None without ``cache_control``), and the cache updated."""
        marks = breakpoints(body)
        if not marks:
            return None
        read = 0
        for key, tokens, _ttl in marks:
            if self._expires.get(key, 0.0) > now:
                read = max(read, tokens)
        written = max(0, marks[-1][1] - read)
        ttl = marks[-1][2]
        for key, _tokens, mark_ttl in marks:
            self._expires[key] = max(self._expires.get(key, 0.0), now + TTL_SECONDS[mark_ttl])
        if len(self._expires) > 100_000:  # a long benchmark must not grow the server without bound
            self._expires = {key: at for key, at in self._expires.items() if at > now}
        return {
            "cache_created_input_tokens": written,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": written if ttl == "5m" else 0,
                "ephemeral_1h_input_tokens": written if ttl == "1h" else 0,
            },
        }
