"""When to send a failed request again, and how long to wait first.

Kept apart from the hook so the sync and async paths share one rule, and so the rule can be tested without a
network: :class:`RetryController` makes every decision of one request's retry loop (attempt counting, the
shared pause, back-off, cancellation, giving up) and the hook's two loops only sleep and send. The server's
own word wins over our back-off: ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date), the
``llm_provider-retry-after`` a LiteLLM proxy forwards from the model provider, and the rate-limit reset
headers, with or without the ``x-`` prefix.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from airflow_agentchat.exceptions import AgentChatConnectionError, AgentChatError, APIError, RateLimitError

# LiteLLM proxies forward the model provider's headers with an "llm_provider-" prefix.
_RETRY_AFTER_HEADERS = ("retry-after", "llm_provider-retry-after")
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

    ``retry-after-ms`` is the most precise and wins; then ``retry-after``, then the provider's ``retry-after``
    forwarded by a LiteLLM proxy; then, for a 429 only (``rate_limited``), the longest of the reset headers
    (a request must wait for every limit it would hit).
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
    for name in _RETRY_AFTER_HEADERS:
        value = headers.get(name)
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


class SharedPause:
    """The moment before which no request of one hook goes out.

    A 429, or any error that names its own delay, pauses every request of the hook, so a batch of many
    concurrent requests backs off together instead of hammering the agent. ``clock`` is ``time.monotonic``
    outside tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.until = 0.0

    def remaining(self) -> float:
        """Seconds until requests may go out again; ≤ 0: now."""
        return self.until - self._clock()

    def extend(self, seconds: float) -> None:
        """Pause until ``seconds`` from now, unless an earlier call already paused for longer."""
        self.until = max(self.until, self._clock() + seconds)


class RetryController:
    """The retry decisions of one request, with no I/O, so the sync and async loops cannot drift apart.

    The loop that sends asks it three things: :meth:`wait` before each attempt (sleep that long first; it
    raises once the request is cancelled), :meth:`sent` as an attempt goes out, and :meth:`failed` when an
    attempt fails (sleep the back-off it returns, or let the error it raises propagate). Sleeping and
    sending stay in the loop.
    """

    def __init__(self, policy: RetryPolicy, pause: SharedPause, cancelled: Callable[[], bool]) -> None:
        self.policy = policy
        self.pause = pause
        self._cancelled = cancelled
        self.attempts = 0  # requests sent so far: every one the server could have seen

    def wait(self) -> float:
        """Seconds to wait before the next attempt may go out (the shared pause); 0: send now."""
        if self._cancelled():
            cancelled = AgentChatConnectionError("Request cancelled: the task was killed")
            cancelled.attempts = self.attempts
            raise cancelled
        return max(0.0, self.pause.remaining())

    def sent(self) -> None:
        """Count an attempt as it goes out."""
        self.attempts += 1

    def failed(self, error: AgentChatError) -> float:
        """The back-off before the next attempt; raises ``error`` when it is final, retries are spent or the
        request was cancelled. A delay the server named, or any 429, also pauses the other requests."""
        error.attempts = self.attempts
        if self._cancelled() or not error.retryable or self.attempts > self.policy.max_retries:
            raise error
        server_delay = error.retry_after if isinstance(error, APIError) else None
        delay = self.policy.delay(self.attempts - 1, server_delay)
        if isinstance(error, RateLimitError) or server_delay is not None:
            self.pause.extend(delay)
        return delay
