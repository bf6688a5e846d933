"""One request limit and one token limit per agent, taken by every attempt any path sends through its connection.

The limits belong to the connection (extras ``requests_per_minute``, ``tokens_per_minute``,
``limit_backend_conn_id``, ``limit_backend_fallback``), so a batch, a single completion, a trigger and the UI
page all take a slot (and their token estimate) from the same limits, retries included. For requests, two layers:

* :class:`Pacer`: one slot every ``60 / (rpm * PACE)`` seconds on a fixed timeline, shared by every hook of
  the process for the same agent. Without a backend it *is* the limit (a mapped batch's shards each pace at
  a static share of it); with a backend it only smooths one process's sends, so no process bursts.
* :class:`RedisWindow`: the moving-window strategy of the ``limits`` library in the Redis named by
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

import asyncio
import hashlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from airflow_agentchat.exceptions import AgentChatError, RateLimitBackendError

if TYPE_CHECKING:
    from airflow.sdk import Connection

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


def redis_url(conn: Connection) -> tuple[str, str]:
    """``(url, where)`` of an Airflow ``redis`` connection: the URL for the client, ``host:port`` for errors.

    Reads the fields the Redis provider's hook reads: host, port, password (and login), extra ``db`` and
    ``ssl`` (the provider need not be installed).
    """
    extra = conn.extra_dejson or {}
    host = (conn.host or "localhost").strip()
    port = conn.port or 6379
    db = extra.get("db", 0) or 0
    if not str(db).isdigit():
        raise AgentChatError(f"Redis connection {conn.conn_id!r}: extra 'db' must be a database number, got {db!r}")
    scheme = "rediss" if str(extra.get("ssl", "")).lower() in ("true", "1", "yes") else "redis"
    auth = ""
    if conn.password:
        auth = f"{quote(conn.login or '', safe='')}:{quote(conn.password, safe='')}@"
    return f"{scheme}://{auth}{host}:{port}/{int(db)}", f"{host}:{port}"


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


class RedisWindow:
    """The shared slots, token window and pause of one agent in Redis, through ``limits``' moving-window strategy."""

    def __init__(
        self,
        url: str,
        where: str,
        conn_id: str,
        key: str,
        per_minute: float | None,
        tokens_per_minute: float | None = None,
    ) -> None:
        from limits import RateLimitItemPerSecond

        self.url = url
        self.where = where
        self.conn_id = conn_id
        self.key = key
        self.items: list[Any] = []
        if per_minute is not None:
            amount, seconds = moving_window(per_minute)
            # The window the limit is kept in, then (for windows longer than a second) a one-second window a
            # tenth above the average rate, as the limits docs advise against bursts: senders on several
            # workers that find a window freed would otherwise fill it at once and then all wait, and the
            # requests of one such burst that arrive late land in the next window's count at the agent.
            self.items.append(RateLimitItemPerSecond(amount, seconds, namespace="agentchat"))
            if seconds > 1:
                self.items.append(RateLimitItemPerSecond(math.ceil(amount / seconds * 1.1), 1, namespace="agentchat"))
        self.tokens = TokenWindow(tokens_per_minute) if tokens_per_minute is not None else None
        self.token_key = f"{key}:tokens"
        self.pause_key = f"{key}:pause"
        self._options: dict[str, Any] = {"socket_timeout": BACKEND_TIMEOUT, "socket_connect_timeout": BACKEND_TIMEOUT}
        self._sync: tuple[Any, Any] | None = None
        self._async: tuple[asyncio.AbstractEventLoop, Any, Any, asyncio.Lock] | None = None
        self._lock = threading.Lock()
        self._queue = threading.Lock()

    def error(self, exc: BaseException) -> RateLimitBackendError:
        from airflow_agentchat.redaction import redact

        detail = f"{type(exc).__name__}: {exc}"
        password = urlsplit(self.url).password
        if password:  # as it is in the URL, and as the client sends it
            detail = redact(redact(detail, password), unquote(password))
        return RateLimitBackendError(
            f"Rate limit backend {self.conn_id!r} (redis at {self.where}) did not answer ({detail}); no request is "
            "sent without the agent's shared limit. Start Redis, or set the agent connection's extra "
            "limit_backend_fallback='static_share' to fall back to a static share of the limit."
        )

    # ----------------------------------------------------------------------------------------- sync

    def _sync_parts(self) -> tuple[Any, Any]:
        with self._lock:
            if self._sync is None:
                import redis
                from limits.storage import RedisStorage
                from limits.strategies import MovingWindowRateLimiter

                storage = RedisStorage(self.url, **self._options)
                self._sync = (MovingWindowRateLimiter(storage), redis.Redis.from_url(self.url, **self._options))
            return self._sync

    def pause_remaining(self) -> float:
        """Seconds every sender of the agent still waits after a 429 one of them saw (≤ 0: none)."""
        try:
            value = self._sync_parts()[1].get(self.pause_key)
        except Exception as exc:
            raise self.error(exc) from None
        return float(value) - time.time() if value else 0.0

    def _steps(self, tokens: int) -> list[tuple[Any, str, int]]:
        """``(item, key, cost)`` to take in order: the request windows, then the tokens."""
        steps = [(item, self.key, 1) for item in self.items]
        if self.tokens is not None and tokens > 0:
            steps.append((self.tokens.item, self.token_key, self.tokens.cost(tokens)))
        return steps

    def acquire(self, sleep: Callable[[float], object], tokens: int = 0) -> None:
        """Take one slot of the shared window and ``tokens`` of the token window, waiting while one is full."""
        limiter, _ = self._sync_parts()
        steps = self._steps(tokens)
        held = 0
        with self._queue:  # one waiter of the process asks Redis at a time; the others queue here
            while True:
                try:
                    # A slot held in the first window is kept while waiting for the next one.
                    while held < len(steps) and limiter.hit(*steps[held][:2], cost=steps[held][2]):
                        held += 1
                    if held == len(steps):
                        return
                    reset = limiter.get_window_stats(*steps[held][:2]).reset_time
                except Exception as exc:
                    raise self.error(exc) from None
                sleep(_wait(reset))

    def publish_pause(self, seconds: float) -> None:
        """Pause every sender of the agent for ``seconds`` (unless a longer pause is already set)."""
        client = self._sync_parts()[1]
        until = time.time() + seconds
        current = client.get(self.pause_key)
        if current is None or float(current) < until:
            client.set(self.pause_key, repr(until), px=max(1, int(seconds * 1000)))

    # ----------------------------------------------------------------------------------------- async

    def _async_parts(self) -> tuple[Any, Any]:
        # A redis.asyncio client belongs to the loop that made it (the batch, the triggerer and the API server
        # each run their own).
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            import redis.asyncio
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import MovingWindowRateLimiter

            storage = RedisStorage(f"async+{self.url}", implementation="redispy", **self._options)
            client = redis.asyncio.Redis.from_url(self.url, **self._options)
            self._async = (loop, MovingWindowRateLimiter(storage), client, asyncio.Lock())
        return self._async[1], self._async[2]

    async def apause_remaining(self) -> float:
        try:
            value = await self._async_parts()[1].get(self.pause_key)
        except Exception as exc:
            raise self.error(exc) from None
        return float(value) - time.time() if value else 0.0

    async def aacquire(self, sleep: Callable[[float], Awaitable[None]], tokens: int = 0) -> None:
        limiter, _ = self._async_parts()
        assert self._async is not None
        steps = self._steps(tokens)
        held = 0
        async with self._async[3]:  # one waiter of the loop asks Redis at a time: no herd when a slot frees
            while True:
                try:
                    while held < len(steps) and await limiter.hit(*steps[held][:2], cost=steps[held][2]):
                        held += 1
                    if held == len(steps):
                        return
                    reset = (await limiter.get_window_stats(*steps[held][:2])).reset_time
                except Exception as exc:
                    raise self.error(exc) from None
                await sleep(_wait(reset))

    async def apublish_pause(self, seconds: float) -> None:
        client = self._async_parts()[1]
        until = time.time() + seconds
        current = await client.get(self.pause_key)
        if current is None or float(current) < until:
            await client.set(self.pause_key, repr(until), px=max(1, int(seconds * 1000)))


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

    def settle(self, estimate: int, used: Any) -> None:
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
        url, where = redis_url(backend_conn)
        backend = RedisWindow(url, where, limits.backend_conn_id, key, rpm, tpm)
    return AgentLimiter(key, rpm, backend, tokens_per_minute=tpm, share=share, fallback=limits.fallback, log=log)
