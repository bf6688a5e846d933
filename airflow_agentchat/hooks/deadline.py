"""Cut an attempt off at its deadline while it waits for the response headers, on both paths.

Each read has the connection's read timeout, but a server that sends a byte every few seconds never lets one
expire. Once the headers are in, :mod:`airflow_agentchat.hooks.body` checks the deadline between reads; the
wait for the headers needs a cut from outside:

* async: :class:`deadline_scope` cancels the waiting task at the deadline (``asyncio.timeout_at`` would do,
  but Python 3.10 lacks it) and turns that into :class:`NetworkTimeoutError`;
* sync: a thread blocked in ``recv`` wakes only when its socket is shut down. :class:`Sockets` learns each
  socket through httpcore's public ``trace`` extension (a new connection) and the response's
  ``network_stream`` extension (a reused one), and :data:`WATCHDOG`, one daemon thread for the process, shuts
  the attempt's socket down when its deadline passes. :meth:`Sockets.shut_all` is what ``cancel`` uses.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from airflow_agentchat.hooks.body import Deadline


class deadline_scope:
    """``async with deadline_scope(deadline):`` raises the deadline's error if the block outlives it."""

    __slots__ = ("_deadline", "_fired", "_handle", "_task")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._fired = False
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(loop.time() + self._deadline.remaining(), self._fire)

    def _fire(self) -> None:
        self._fired = True
        if self._task is not None:
            self._task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fired and exc_type is asyncio.CancelledError:
            uncancel = getattr(self._task, "uncancel", None)  # 3.11+: the cancel was ours, not the caller's
            if uncancel is not None:
                uncancel()
            raise self._deadline.error() from exc


class _Current:
    __slots__ = ("stream",)

    def __init__(self) -> None:
        self.stream: Any = None

    def shut(self) -> None:
        shut(self.stream)


class Sockets:
    """The sockets of one sync transport, learnt through public httpcore extensions only."""

    def __init__(self) -> None:
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()
        self._local = threading.local()

    def attempt(self) -> _Current:
        """This thread's holder of the stream its request runs on (the watchdog reads it from its own thread)."""
        current = getattr(self._local, "current", None)
        if current is None:
            current = self._local.current = _Current()
        return current

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore ``trace`` extension: note each new connection's stream as it is opened."""
        if event == "connection.connect_tcp.complete" and info.get("return_value") is not None:
            self._streams.add(info["return_value"])
            self.attempt().stream = info["return_value"]

    def seen(self, response_extensions: dict[str, Any]) -> None:
        """Note the stream a response arrived on: a reused connection is not announced by ``trace``, and a
        thread's next request most likely reuses the connection its last one used."""
        stream = response_extensions.get("network_stream")
        if stream is not None:
            self.attempt().stream = stream

    def shut_all(self) -> None:
        for stream in list(self._streams):
            shut(stream)


def shut(stream: Any) -> None:
    """Shut a network stream's socket down: a thread blocked reading it wakes with an error at once."""
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Watchdog:
    """Run an action when a deadline passes, unless disarmed first: one daemon thread for every sync hook.

    Arming is a dict insert under a lock; the thread is woken only when a new deadline is earlier than the
    moment it already sleeps until, which for attempts of equal length is almost never.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Callable[[], object]]] = {}
        self._tokens = itertools.count()
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    def arm(self, at: float, action: Callable[[], object]) -> int:
        token = next(self._tokens)
        with self._cond:
            self._armed[token] = (at, action)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agentchat-deadline", daemon=True)
                self._thread.start()
            elif at < self._wake_at:
                self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (at, action) in list(self._armed.items()):
                    if at <= now:
                        del self._armed[token]
                        try:
                            action()
                        except Exception:
                            pass
                self._wake_at = min((at for at, _ in self._armed.values()), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)


WATCHDOG = Watchdog()
