"""When to send a failed request again, and how long to wait first.

Kept apart from the hook so the sync and async paths share one rule, and so the rule can be tested without a
network. The server's own word wins over our back-off: ``retry-after-ms``, ``retry-after`` (seconds or an HTTP
date) and the rate-limit reset headers, with or without the ``x-`` prefix.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

_RESET_HEADERS = (
    "ratelimit-reset",
    "x-ratelimit-reset",
    "ratelimit-reset-requests",
    "x-ratelimit-reset-requests",
    "ratelimit-reset-tokens",
    "x-ratelimit-reset-tokens",
)
_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_duration(value: str, now: float) -> float | None:
    """Seconds from ``"1.5"``, ``"6m0s"``, ``"250ms"``, an epoch timestamp, or an HTTP date."""
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        # Large numbers are epoch timestamps (some servers send the reset moment, not a delta).
        return number - now if number > 1_000_000_000 else number
    parts = list(_DURATION.finditer(value))
    if parts and "".join(p.group(0) for p in parts) == value:
        return sum(float(p.group("value")) * _UNIT_SECONDS[p.group("unit")] for p in parts)
    try:
        return parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError, IndexError):
        return None


def retry_after_from_headers(
    headers: Mapping[str, str], now: float | None = None, *, rate_limited: bool = True
) -> float | None:
    """The delay the server asks for, in seconds, or ``None`` when it names none.

    ``retry-after-ms`` is the most precise and wins; then ``retry-after``; then, for a 429 only
    (``rate_limited``), the longest of the reset headers (a request must wait for every limit it would hit).
    OpenAI-style servers send reset headers on every response, where they describe the quota window, not
    a reason to wait after a 500.
    """
    now = time.time() if now is None else now
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        seconds = _parse_duration(value, now)
        if seconds is not None:
            return max(0.0, seconds)
    if not rate_limited:
        return None
    resets = [_parse_duration(headers[name], now) for name in _RESET_HEADERS if name in headers]
    known = [seconds for seconds in resets if seconds is not None]
    return max(0.0, max(known)) if known else None


@dataclass
class RetryPolicy:
    """Capped exponential back-off with jitter, overridden by the server's own delay.

    ``max_wait`` caps a server-requested delay too: a server asking for an hour gets ``max_wait`` and, if it
    still refuses, the error surfaces instead of a task that sleeps forever.
    """

    max_retries: int = 4
    initial_delay: float = 0.5
    max_delay: float = 20.0
    max_wait: float = 120.0
    jitter: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, attempt: int, server_delay: float | None) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        if server_delay is not None:
            return min(server_delay, self.max_wait)
        backoff = min(self.max_delay, self.initial_delay * (2**attempt))
        return backoff * (0.5 + 0.5 * self.jitter())
