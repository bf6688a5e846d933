"""Fault specs: what can go wrong on purpose, and when.

A fault spec is a JSON object (sent to ``POST /_dev/faults`` as an object or a list of objects)::

    {"kind": "429", "retry_after": 1, "times": 2, "match": "hello"}

Keys (all optional except ``kind``):

=================  =================================================================================
``kind``           see the table below
``times``          how many matching requests consume it (default 1; ``-1`` = every request, forever)
``match``          only requests whose last user message contains this substring
``status``         override the HTTP status of error kinds
``message``        override the error message
``retry_after``    seconds, sent as ``retry-after``; ``retry_after_date: true`` sends an HTTP date instead
``retry_after_ms`` milliseconds, sent as ``retry-after-ms``
``headers``        extra response headers, e.g. ``{"x-ratelimit-reset-requests": "1s"}``
``latency_ms``     extra delay before the fault is delivered
``after_chunks``   stream faults: chunks sent before the fault, role chunk included (default 2)
=================  =================================================================================

Kinds:

=======================  ============================================================================
``"429"``                ``{"error": {... "type": "rate_limit_error", "code": "rate_limit_exceeded"}}``
``"insufficient_quota"`` 429 with ``type``/``code`` ``insufficient_quota`` (a final error)
any other number         an OpenAI-shaped error with that status (``"500"``, ``"503"``, ``"408"``...)
``"502"``                an HTML "502 Bad Gateway" page (``text/html``)
``"reset"``              the socket is closed (RST) without any response
``"truncate"``           streams stop after ``after_chunks`` chunks, with no finish chunk and no
                         ``[DONE]``; non-stream requests get a JSON body cut in half
``"malformed"``          200 with a body that is not valid JSON (streams: one event with broken JSON)
``"error_event"``        streams: ``data: {"error": {...}}`` after ``after_chunks`` chunks; non-stream: 500
``"error_text"``         ``{"error": "<message>"}`` (status default 500)
``"too_many_requests"``  ``{"id": "too_many_requests", "message", "request_id"}`` (status default 429)
``"detail"``             ``{"detail": "<message>"}`` (status default 400); ``"detail_list": true`` gives a
                         FastAPI-style list ``[{"loc", "msg", "type"}]`` (status default 422)
``"content_filter"``     200: an answer stopped by the content filter (``finish_reason: content_filter``)
=======================  ============================================================================

Magic markers in the last user message apply on every request carrying them (deterministic per prompt):

* ``[[fault:KIND]]`` or ``[[fault:KIND:key=value,key=value]]`` (values parsed as int/float/bool when they
  look like one). With ``times=N`` the fault applies only to the first N requests with that exact prompt
  text (counted in ``/_dev/stats`` ``by_prompt``; ``/_dev/reset`` starts over), so retries then succeed.
* ``[[latency:MS]]`` adds MS milliseconds to that request.

Markers are removed from the echoed prompt.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

_FAULT_MARKER = re.compile(r"\[\[fault:([A-Za-z0-9_]+)(?::([^\[\]]*))?\]\]")
_LATENCY_MARKER = re.compile(r"\[\[latency:(\d+(?:\.\d+)?)\]\]")

KNOWN_KINDS = frozenset(
    {
        "insufficient_quota",
        "reset",
        "truncate",
        "malformed",
        "error_event",
        "error_text",
        "too_many_requests",
        "detail",
        "content_filter",
    }
)


@dataclass
class Fault:
    """A fault to deliver; ``params`` holds every spec key except kind/times/match."""

    kind: str
    times: int = 1
    match: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Fault:
        """Build a fault from a JSON spec, raising ValueError with a readable reason if it is wrong."""
        if not isinstance(spec, dict):
            raise ValueError("a fault spec must be a JSON object")
        kind = str(spec.get("kind", ""))
        if not (kind.isdigit() or kind in KNOWN_KINDS):
            raise ValueError(f"unknown fault kind {kind!r}")
        times = spec.get("times", 1)
        if not isinstance(times, int) or times == 0 or times < -1:
            raise ValueError("times must be a positive integer or -1")
        match = spec.get("match")
        if match is not None and not isinstance(match, str):
            raise ValueError("match must be a string")
        params = {k: v for k, v in spec.items() if k not in ("kind", "times", "match")}
        return cls(kind=kind, times=times, match=match, params=params)

    def to_spec(self) -> dict[str, Any]:
        """The JSON spec form, for ``GET /_dev/faults``."""
        return {"kind": self.kind, "times": self.times, "match": self.match, **self.params}


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_markers(prompt: str) -> tuple[Fault | None, float]:
    """The marker fault (if any) and marker latency in ms found in ``prompt``."""
    if "[[" not in prompt:
        return None, 0.0
    latency = sum(float(m.group(1)) for m in _LATENCY_MARKER.finditer(prompt))
    found = _FAULT_MARKER.search(prompt)
    if found is None:
        return None, latency
    params: dict[str, Any] = {}
    for item in (found.group(2) or "").split(","):
        if "=" in item:
            key, _, value = item.partition("=")
            params[key.strip()] = _parse_value(value.strip())
    times = params.pop("times", -1)
    try:
        fault = Fault.from_spec({"kind": found.group(1), **params})
    except ValueError:
        return None, latency
    fault.times = times if isinstance(times, int) else -1
    return fault, latency


class FaultQueue:
    """Pending faults from the control API, consumed first-come by matching requests (thread-safe)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, faults: list[Fault]) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_spec() for f in self._faults]

    def take(self, prompt: str) -> Fault | None:
        """Consume one use of the first fault matching ``prompt`` (None if no fault applies)."""
        if not self._faults:
            return None
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.match is not None and fault.match not in prompt:
                    continue
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        del self._faults[i]
                return fault
        return None
