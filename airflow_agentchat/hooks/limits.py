"""One request limit and one token limit per agent, taken by every attempt any path sends through its connection.

The limits belong to the connection (extras ``requests_per_minute``, ``tokens_per_minute``,
``limit_backend_conn_id``, ``limit_backend_fallback``), so a batch, a single completion, a trigger and the UI
page all take a slot (and their token estimate) from the same limits, retries included. For requests, two layers:

* :class:`Pacer`: one slot every ``60 / (rpm * PACE)`` seconds on a fixed timeline, shared by every hook of
  the process for the same agent. Without a backend it *is* the limit (a mapped batch's shards each pace at
  a static share of it); with a backend it only smooths one process's sends, so no process bursts.
* :class:`~.limit_backend.RedisWindow`: the moving-window strategy of the ``limits`` library in the Redis named by
  ``limit_backend_conn_id``: every sender of the agent, on every worker, takes its slot there, so the shares
  follow demand (a finished task's share goes to the others) and a waiting sender holds nothing but the
  request it is about to send. A 429 pause is kept there too, under the same key, so every sender stops.

Tokens: each attempt reserves its estimate (:func:`~airflow_agentchat.spend.estimate` plus its completion cap or
:data:`~airflow_agentchat.spend.DEFAULT_COMPLETION_TOKENS`) in a :class:`TokenWindow`, a moving window whose
hits cost tokens: in the same Redis when the connection names a backend, else in a window this process's hooks
share (a static share of the limit per shard, like requests). What an answer used beyond its estimate is added
to the next reservation, so the long-run rate follows the real usage without holding an answer back.

The key in Redis is a hash of the endpoint's host and path (the agent), never of its access key. A backend
that cannot be reached stops sending with :class:`RateLimitBackendError` (fail closed) unless the
connection opts in to ``limit_backend_fallback="static_share"``.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_agentchat.exceptions import AgentChatError, RateLimitBackendError

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_agentchat.hooks.limit_backend import RedisWindow

#: Share of ``requests_per_minute`` actually granted: the server counts arrivals, not sends, and the few
#: milliseconds between the two vary; the margin keeps every window of arrivals under the limit.
PACE = 0.98
#: The same for the shared window, which grants in bursts when a slot frees: more room for that jitter.
WINDOW_PACE = 0.96
FALLBACKS = ("fail", "static_share")
_KEY_PREFIX = "agentchat:limit"
#: How long a call to the backend may take before the backend counts as unreachable.
BACKEND_TIMEOUT = 2.0
#: Seconds of the token window: a sixth of ``tokens_per_minute`` in any ten seconds.
TOKEN_WINDOW = 10
#: Most entries a token window holds: ``limits``' moving window stores one entry per unit of cost, so tokens
#: are counted in units of ``ceil(window / TOKEN_UNITS)`` (a few tokens each at large limits).
TOKEN_UNITS = 2000


@dataclass(frozen=True)
class LimitSettings:
    """The agent's limits as the connection states them."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    backend_conn_id: str | None = None
    fallback: str = "fail"

    @classmethod
    def from_extra(
        cls, extra: Mapping[str, Any], positive: Callable[[Mapping[str, Any], str], float | None]
    ) -> LimitSettings:
        fallback = str(extra.get("limit_backend_fallback") or "fail").strip()
        if fallback not in FALLBACKS:
            raise AgentChatError(
                f"Connection extra 'limit_backend_fallback' must be one of {', '.join(FALLBACKS)}, got {fallback!r}"
            )
        backend = extra.get("limit_backend_conn_id")
        if backend is not None and not isinstance(backend, str):
            raise AgentChatError(f"Connection extra 'limit_backend_conn_id' must be a connection id, got {backend!r}")
        return cls(
            requests_per_minute=positive(extra, "requests_per_minute"),
            tokens_per_minute=positive(extra, "tokens_per_minute"),
            backend_conn_id=(backend or "").strip() or None,
            fallback=fallback,
        )


def agent_key(base_url: str) -> str:
    """The agent's name in the backend: a hash of the endpoint's host and path (never of the access key)."""
    parts = urlsplit(base_url)
    digest = hashlib.sha256(f"{parts.netloc.lower()}{parts.path}".encode()).hexdigest()[:24]
    return f"{_KEY_PREFIX}:{digest}"


class Pacer:
    """Slots one ``period`` apart on a fixed timeline, thread-safe and loop-agnostic.

    Slots are booked back to back, so a waiter woken late does not push every later slot back; a gap with
    nothing to send is not made up, so there is never a burst.
    """

    def __init__(self, per_minute: float, pace: float = PACE) -> None:
        self.per_minute = per_minute
        self.period = 60.0 / (per_minute * pace)
        self._next = 0.0
        self._lock = threading.Lock()

    def book(self) -> float:
        """Book the next slot; the seconds to wait for it (0: now)."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.period
        return slot - now


_PACERS: dict[tuple[str, float, float], Pacer] = {}
_PACERS_LOCK = threading.Lock()


def process_pacer(key: str, per_minute: float, pace: float = PACE) -> Pacer:
    """The pacer every hook of this process shares for one agent and rate."""
    with _PACERS_LOCK:
        pacer = _PACERS.get((key, per_minute, pace))
        if pacer is None:
            pacer = _PACERS[(key, per_minute, pace)] = Pacer(per_minute, pace)
        return pacer


def moving_window(per_minute: float) -> tuple[int, int]:
    """``(amount, seconds)`` of the shared window for a per-minute limit.

    The window is as short as keeps the rounding loss small (at least 20 requests in it), and divides ten
    seconds, so every ten-second window holds at most a sixth of the per-minute limit.
    """
    for seconds in (1, 2, 5, 10):
        amount = math.floor(WINDOW_PACE * per_minute * seconds / 60)
        if amount >= 20:
            return amount, seconds
    amount = math.floor(WINDOW_PACE * per_minute / 6)
    return (amount, 10) if amount >= 1 else (max(1, math.floor(WINDOW_PACE * per_minute)), 60)


class TokenWindow:
    """``tokens_per_minute`` as a moving window of :data:`TOKEN_WINDOW` seconds whose hits cost tokens."""

    def __init__(self, tokens_per_minute: float) -> None:
        from limits import RateLimitItemPerSecond

        self.tokens_per_minute = tokens_per_minute
        tokens = max(1.0, tokens_per_minute * TOKEN_WINDOW / 60)
        self.unit = max(1, math.ceil(tokens / TOKEN_UNITS))
        self.item = RateLimitItemPerSecond(max(1, math.floor(tokens / self.unit)), TOKEN_WINDOW, namespace="agentchat")

    def cost(self, tokens: int) -> int:
        """Units a reservation of ``tokens`` takes; one larger than the window takes the whole window."""
        return min(self.item.amount, max(1, math.ceil(tokens / self.unit)))


_TOKEN_WINDOWS: dict[tuple[str, float], tuple[TokenWindow, Any]] = {}


def process_tokens(key: str, tokens_per_minute: float) -> tuple[TokenWindow, Any]:
    """The token window (and its in-memory ``limits`` limiter) every hook of this process shares for one agent."""
    with _PACERS_LOCK:
        found = _TOKEN_WINDOWS.get((key, tokens_per_minute))
        if found is None:
            from limits.storage import MemoryStorage
            from limits.strategies import MovingWindowRateLimiter

            found = (TokenWindow(tokens_per_minute), MovingWindowRateLimiter(MemoryStorage()))
            _TOKEN_WINDOWS[(key, tokens_per_minute)] = found
        return found


def _wait(reset: float) -> float:
    """Seconds until a full window frees a slot, with a floor so waiters do not spin on Redis."""
    return min(max(reset - time.time(), 0.002), 1.0)


class AgentLimiter:
    """The request and token limits of one agent, as every attempt through a hook takes them.

    ``share``: the number of this task's instances that may send at once (a mapped batch's shards). Only a
    limit without a shared backend (or the static-share fallback) divides by it.
    """

    def __init__(
        self,
        key: str,
        per_minute: float | None,
        backend: RedisWindow | None = None,
        *,
        tokens_per_minute: float | None = None,
        share: int = 1,
        fallback: str = "fail",
        log: Any = None,
    ) -> None:
        self.key = key
        self.per_minute = per_minute
        self.tokens_per_minute = tokens_per_minute
        self.backend = backend
        self.share = max(1, share)
        self.fallback = fallback
        self.log = log
        self._debt = 0  # tokens answers used beyond their estimates: added to the next reservation
        self._debt_lock = threading.Lock()
        self.pacer: Pacer | None = None
        self.tokens: tuple[TokenWindow, Any] | None = None
        if backend is None:
            self._local()
        elif per_minute is not None:
            # With a backend the process only smooths its sends at the rate of the shared window (the backend
            # holds the limit; a process that bursts into a freed window bunches arrivals at the agent).
            amount, seconds = moving_window(per_minute)
            self.pacer = process_pacer(key, amount * 60.0 / seconds, 1.0)

    def _local(self) -> None:
        """Without a backend each of ``share`` shards keeps its static share of the limits in-process."""
        self.pacer = process_pacer(self.key, self.per_minute / self.share) if self.per_minute is not None else None
        tpm = self.tokens_per_minute
        self.tokens = process_tokens(self.key, tpm / self.share) if tpm is not None else None

    @property
    def counts_tokens(self) -> bool:
        return self.tokens_per_minute is not None

    def _fall_back(self, error: RateLimitBackendError) -> None:
        if self.fallback != "static_share":
            raise error
        if self.log is not None:
            self.log.warning("%s Falling back to a static share (1/%d) of the limit.", error, self.share)
        self.backend = None
        self._local()

    def _reservation(self, tokens: int) -> int:
        if not self.counts_tokens:
            return 0
        with self._debt_lock:
            tokens, self._debt = tokens + self._debt, 0
        return tokens

    def correct(self, estimate: int, used: Any) -> None:
        """Remember what an answer used beyond its estimate; the next reservation takes it too."""
        if self.counts_tokens and isinstance(used, int) and used > estimate:
            with self._debt_lock:
                self._debt += used - estimate

    def _take_local_tokens(self, tokens: int) -> float:
        """Take ``tokens`` of the in-process window; the seconds to wait before trying again (0: taken)."""
        if self.tokens is None or tokens <= 0:
            return 0.0
        window, limiter = self.tokens
        if limiter.hit(window.item, self.key, cost=window.cost(tokens)):
            return 0.0
        return _wait(limiter.get_window_stats(window.item, self.key).reset_time)

    def acquire(self, pause: Any, sleep: Callable[[float], object], tokens: int = 0) -> None:
        """Wait for the agent's slot and ``tokens`` of its token budget for one attempt (sync path)."""
        tokens = self._reservation(tokens)
        if self.backend is not None:
            try:
                remaining = self.backend.pause_remaining()
            except RateLimitBackendError as exc:
                self._fall_back(exc)
                remaining = 0.0
            if remaining > 0:
                pause.extend(remaining)
                sleep(remaining)
        while (wait := self._take_local_tokens(tokens)) > 0:
            sleep(wait)
        if self.pacer is not None and (delay := self.pacer.book()) > 0:
            sleep(delay)
        if self.backend is not None:
            try:
                self.backend.acquire(sleep, tokens)
            except RateLimitBackendError as exc:
                self._fall_back(exc)
                while (wait := self._take_local_tokens(tokens)) > 0:
                    sleep(wait)

    async def aacquire(self, pause: Any, sleep: Callable[[float], Awaitable[None]], tokens: int = 0) -> None:
        """Async twin of :meth:`acquire`."""
        tokens = self._reservation(tokens)
        if self.backend is not None:
            try:
                remaining = await self.backend.apause_remaining()
            except RateLimitBackendError as exc:
                self._fall_back(exc)
                remaining = 0.0
            if remaining > 0:
                pause.extend(remaining)
                await sleep(remaining)
        while (wait := self._take_local_tokens(tokens)) > 0:
            await sleep(wait)
        if self.pacer is not None and (delay := self.pacer.book()) > 0:
            await sleep(delay)
        if self.backend is not None:
            try:
                await self.backend.aacquire(sleep, tokens)
            except RateLimitBackendError as exc:
                self._fall_back(exc)
                while (wait := self._take_local_tokens(tokens)) > 0:
                    await sleep(wait)

    def publish_pause(self, seconds: float) -> None:
        """Tell every sender of the agent about a pause this process saw; a failure here only logs."""
        if self.backend is not None and seconds > 0:
            try:
                self.backend.publish_pause(seconds)
            except Exception as exc:
                self._warn_publish(exc)

    async def apublish_pause(self, seconds: float) -> None:
        if self.backend is not None and seconds > 0:
            try:
                await self.backend.apublish_pause(seconds)
            except Exception as exc:
                self._warn_publish(exc)

    def _warn_publish(self, exc: Exception) -> None:
        # The next attempt's acquire fails closed on the same backend; this pause is still kept in-process.
        if self.log is not None and self.backend is not None:
            self.log.warning("Could not share a rate-limit pause: %s", self.backend.error(exc))


def build_limiter(
    base_url: str,
    limits: LimitSettings,
    backend_conn: Connection | None,
    *,
    share: int = 1,
    log: Any = None,
) -> AgentLimiter | None:
    """The limiter of an agent connection, or ``None`` when it states neither a request nor a token limit."""
    rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
    if rpm is None and tpm is None:
        return None
    key = agent_key(base_url)
    backend = None
    if backend_conn is not None and limits.backend_conn_id:
        from airflow_agentchat.hooks.limit_backend import RedisWindow, redis_url

        url, where = redis_url(backend_conn)
        backend = RedisWindow(url, where, limits.backend_conn_id, key, rpm, tpm)
    return AgentLimiter(key, rpm, backend, tokens_per_minute=tpm, share=share, fallback=limits.fallback, log=log)
