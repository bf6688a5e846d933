"""Request metrics through Airflow's own metrics layer, so StatsD, Datadog and OpenTelemetry all work.

Names (prefixed by ``[metrics] statsd_prefix``, ``airflow`` by default); every metric carries the tags
``conn_id``, ``dag_id`` and ``task_id``, and ``agentchat.requests`` also ``outcome``:

* ``agentchat.requests`` -- counter, one per request (retries inside it included), by ``outcome``: ``ok``,
  ``invalid_output`` or the error kind (``rate_limited``, ``server_error``, ...);
* ``agentchat.retries`` -- counter of extra attempts the hook made;
* ``agentchat.prompt_tokens`` / ``agentchat.completion_tokens`` -- counters of the tokens in the answers;
* ``agentchat.cache_read_tokens`` / ``agentchat.cache_created_tokens`` -- counters of the prompt tokens read from
  and written to the prompt cache (both are part of ``agentchat.prompt_tokens``);
* ``agentchat.latency`` -- timer of each request, in milliseconds (retries and their back-off included).

Plain StatsD drops tags, so there each counter is also sent with the tags as name parts:
``agentchat.requests.<conn_id>.<dag_id>.<task_id>.<outcome>``, ``agentchat.prompt_tokens.<conn_id>.<dag_id>.
<task_id>`` and so on (a ``.`` inside a value becomes ``__``, as in Airflow's own names).

Counters are added up in memory and sent by :meth:`TaskMetrics.flush` (the batch flushes on its ticker), so a
fast batch sends a handful of packets per second rather than several per request. When metrics are off,
:meth:`TaskMetrics.create` returns None and callers skip every call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airflow_agentchat.usage import TokenUsage

REQUESTS = "agentchat.requests"
RETRIES = "agentchat.retries"
PROMPT_TOKENS = "agentchat.prompt_tokens"
COMPLETION_TOKENS = "agentchat.completion_tokens"
CACHE_READ_TOKENS = "agentchat.cache_read_tokens"
CACHE_CREATED_TOKENS = "agentchat.cache_created_tokens"
LATENCY = "agentchat.latency"

_INVALID = re.compile(r"[^a-zA-Z0-9_-]")


def error_kind(exc: BaseException) -> str:
    """The error's own ``kind`` (every error of this provider names one). A ``UnicodeError`` is a lone
    surrogate in a request, an ``invalid_request`` (the same item fails the same way every time); anything
    else is an ``internal_error``."""
    kind = getattr(exc, "kind", None)
    if isinstance(kind, str) and kind:
        return kind
    return "invalid_request" if isinstance(exc, UnicodeError) else "internal_error"


def _part(value: Any) -> str:
    return _INVALID.sub("_", str(value).replace(".", "__")) or "none"


def metrics_enabled() -> bool:
    """Whether the deployment sends metrics at all (StatsD, Datadog or OpenTelemetry)."""
    from airflow_agentchat.compat import conf

    return any(
        conf().getboolean("metrics", key, fallback=False) for key in ("statsd_on", "statsd_datadog_enabled", "otel_on")
    )


class TaskMetrics:
    """The metrics of one task's requests, tagged with its connection, DAG and task."""

    def __init__(self, stats: Any, tags: Mapping[str, str], *, name_parts: bool) -> None:
        self._stats = stats
        self.tags = dict(tags)
        self._suffix = "." + ".".join(_part(tags[key]) for key in ("conn_id", "dag_id", "task_id"))
        self._name_parts = name_parts
        self._counts: dict[tuple[str, str | None], int] = {}

    def use_connection(self, conn_id: str) -> None:
        """Tag what follows with ``conn_id``: a fallback connection answers from now on (counters so far are
        sent under the connection they belong to)."""
        self.flush()
        self.tags["conn_id"] = str(conn_id)
        self._suffix = "." + ".".join(_part(self.tags[key]) for key in ("conn_id", "dag_id", "task_id"))

    @classmethod
    def create(cls, conn_id: str, context: Mapping[str, Any] | None) -> TaskMetrics | None:
        """Metrics for this task, or None when metrics are off (then nothing is ever emitted)."""
        if not metrics_enabled():
            return None
        from airflow_agentchat.compat import conf as _conf
        from airflow_agentchat.compat import stats as _stats

        conf, stats = _conf(), _stats()

        ti = (context or {}).get("ti")
        tags = {
            "conn_id": str(conn_id),
            "dag_id": str(getattr(ti, "dag_id", None) or "unknown"),
            "task_id": str(getattr(ti, "task_id", None) or "unknown"),
        }
        plain = (
            conf.getboolean("metrics", "statsd_on", fallback=False)
            and not conf.getboolean("metrics", "statsd_datadog_enabled", fallback=False)
            and not conf.getboolean("metrics", "statsd_influxdb_enabled", fallback=False)
        )
        return cls(stats, tags, name_parts=plain)

    def request(self, outcome: str, attempts: int, latency_ms: float | None, usage: Mapping[str, Any] | None) -> None:
        """Count one finished request (its latency is sent at once; counters wait for :meth:`flush`)."""
        counts = self._counts
        key = (REQUESTS, outcome)
        counts[key] = counts.get(key, 0) + 1
        if attempts > 1:
            counts[(RETRIES, None)] = counts.get((RETRIES, None), 0) + attempts - 1
        if usage:
            tokens = TokenUsage.of(usage)
            for name, value in (
                (PROMPT_TOKENS, tokens.prompt_tokens),
                (COMPLETION_TOKENS, tokens.completion_tokens),
                (CACHE_READ_TOKENS, tokens.cache_read_input_tokens),
                (CACHE_CREATED_TOKENS, tokens.cache_created_input_tokens),
            ):
                if value:
                    counts[(name, None)] = counts.get((name, None), 0) + value
        if latency_ms is not None:
            self._stats.timing(LATENCY, latency_ms, tags=self.tags)
            if self._name_parts:
                self._stats.timing(LATENCY + self._suffix, latency_ms)

    def flush(self) -> None:
        """Send the counters added up since the last flush."""
        counts, self._counts = self._counts, {}
        stats, tags = self._stats, self.tags
        for (name, outcome), count in counts.items():
            if outcome is None:
                stats.incr(name, count, tags=tags)
                if self._name_parts:
                    stats.incr(name + self._suffix, count)
            else:
                stats.incr(name, count, tags={**tags, "outcome": outcome})
                if self._name_parts:
                    stats.incr(f"{name}{self._suffix}.{_part(outcome)}", count)
