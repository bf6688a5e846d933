"""What a batch records: the one shape of a result line, and the counters of a run.

Kept apart from the engine (:mod:`airflow_agentchat.batch.runner`) so the line format, which resume, compose
and every reader depend on, has one home of its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_agentchat.json_bytes import json_bytes
from airflow_agentchat.usage import ZERO, TokenUsage, UsageTally


def result_line(
    item_id: str,
    error: dict[str, Any] | None,
    *,
    answer: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    attempts: int,
    latency_ms: float | None,
    request_id: str | None = None,
    context: Any = None,
    response: bytes | None = None,
    cost: float | None = None,
    cached_usage: dict[str, Any] | None = None,
    conn_id: str | None = None,
) -> bytes:
    """The one shape of a result line: ``status`` is ``ok``, or ``error`` with the ``error`` object.

    ``answer`` holds what an answer adds (``text``, ``finish_reason``, ``output`` or ``raw``); an item with no
    answer used no tokens. ``cost`` is there when the connection's prices are known. ``response`` is the
    whole response already encoded (:meth:`ChatCompletion.to_json`), written last as it is. An answer from
    the response cache has ``cached: true``, ``usage`` (and ``cost``) zero, since nothing was paid for it now,
    and ``cached_usage``: what it cost the run that paid for it. ``conn_id`` is on every line: the connection
    that answered (for a cached answer, the connection whose cache held it), the last one tried for an error,
    and null for an item never sent (an invalid item).
    """
    record: dict[str, Any] = {"id": item_id, "status": "ok" if error is None else "error"}
    if error is not None:
        record["error"] = error
    if answer:
        record.update(answer)
    record["usage"] = usage if usage is not None else ZERO.as_dict()
    if cached_usage is not None:
        record.update(cached=True, cached_usage=cached_usage)
    if cost is not None:
        record["cost"] = cost
    record.update(attempts=attempts, latency_ms=latency_ms, conn_id=conn_id)
    if answer is not None:
        record["request_id"] = request_id
    if context is not None:
        record["context"] = context
    if response is None:
        return json_bytes(record)
    return json_bytes(record)[:-1] + b',"response":' + response + b"}"


@dataclass
class RunStats:
    """Counters of this run (the composed output has the all-runs totals)."""

    total: int = 0  # items expected in the input (for progress), if known
    resumed: int = 0
    sent: int = 0  # items sent (at least one request each)
    requests: int = 0  # requests made: one per item, plus its repair rounds
    repairs: int = 0  # repair rounds of items recorded
    cached: int = 0  # answered from the response cache: counted in succeeded, never sent
    failovers: int = 0  # items sent to a next connection after their request failed for good on one
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    attempts: int = 0
    tokens: UsageTally = field(default_factory=UsageTally)
    cached_tokens: UsageTally = field(default_factory=UsageTally)  # what the cached answers cost when paid
    cost: float = 0.0  # the cost of this run's lines, each priced by the connection that answered it
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.rejected

    @property
    def usage(self) -> TokenUsage:
        return self.tokens.total()

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def rate(self) -> float:
        elapsed = self.elapsed
        return (self.succeeded + self.failed) / elapsed if elapsed > 0 else 0.0

    def progress(self, final: bool = False) -> tuple[Any, ...]:
        """A progress log line's format and arguments."""
        rate = self.rate()
        todo = max(0, self.total - self.resumed) if self.total else 0
        left = max(0, todo - self.done) if todo else 0
        eta = duration(left / rate) if rate > 0 and todo else "?"
        usage = self.usage
        return (
            "Batch %s: %d/%s done (%s%%), %d failed, %d invalid, %.1f items/s, %s %s, tokens %d "
            "(%d prompt + %d completion), resumed %d, cached %d, failed over %d",
            "finished" if final else "progress",
            self.done,
            todo or "?",
            f"{100 * self.done / todo:.0f}" if todo else "?",
            self.failed,
            self.rejected,
            rate,
            "elapsed" if final else "ETA",
            duration(self.elapsed) if final else eta,
            usage.total_tokens,
            usage.prompt_tokens,
            usage.completion_tokens,
            self.resumed,
            self.cached,
            self.failovers,
        )


def duration(seconds: float) -> str:
    """``h:mm:ss`` for a progress line (``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def summed(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """The usage of several requests (an item and its repair rounds) as one."""
    total = UsageTally()
    for usage in usages:
        total.add(usage)
    return total.total().as_dict()
