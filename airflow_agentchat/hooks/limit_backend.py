"""The shared side of one limit per agent: the ``limits`` library's moving window in Redis.

:class:`RedisWindow` takes request slots (and token units) for every sender of one agent, on every worker, and
keeps the pause a 429 asked for; :func:`redis_url` turns an Airflow ``redis`` connection into the URL the
``limits`` storage wants, without the password in anything shown. :mod:`.limits` decides when to use it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from airflow_agentchat.exceptions import AgentChatError, RateLimitBackendError
from airflow_agentchat.hooks.limits import BACKEND_TIMEOUT, TokenWindow, _wait, moving_window

if TYPE_CHECKING:
    from airflow.sdk import Connection


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
