"""When a batch stops sending to one connection, and when it tries it again: a circuit breaker with no I/O.

A batch with ``fallback_conn_ids`` sends each item to the first connection that will take it. Without a
breaker, every item would wait out the primary's retries during an outage before moving on, and the outage
would get every item's retries. :class:`Breaker` makes the decisions for one connection, and the batch only
asks and reports (the clock is injected, like :class:`~airflow_agentchat.hooks.retry.SharedPause`):

* closed: requests go out; ``failures`` consecutive requests that failed over (by
  :func:`airflow_agentchat.failover.fails_over`) open it;
* open: no request goes out for ``cooldown`` seconds, items go straight to the next connection;
* half-open: after the cool-down one request (the probe) goes out; its success closes the breaker, its failure
  opens it for another cool-down. Other items skip the connection while the probe is in flight.

Any request that ended with an answer, or with an error of the request rather than the connection (an invalid
request, a content filter), counts as a success: the connection is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    """The breaker of one connection of a batch (see the module docstring)."""

    def __init__(self, failures: int = 5, cooldown: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1:
            raise ValueError("breaker_failures must be at least 1")
        if cooldown < 0:
            raise ValueError("breaker_cooldown must be >= 0")
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self.state = CLOSED
        self.streak = 0  # consecutive failures while closed
        self.opened = 0  # times it opened (for the summary)
        self._reopen_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """Whether a request may go to the connection now; after the cool-down, the first caller is the probe."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self._clock() < self._reopen_at:
                return False
            self.state = HALF_OPEN
        if self._probing:
            return False
        self._probing = True
        return True

    def remaining(self) -> float:
        """Seconds until the probe may go out (0 when closed, or when the cool-down has passed)."""
        return max(0.0, self._reopen_at - self._clock()) if self.state == OPEN else 0.0

    def succeeded(self) -> None:
        """A request got an answer (or a final error of its own): the connection is up."""
        self.state, self.streak, self._probing = CLOSED, 0, False

    def failed(self) -> None:
        """A request failed over: count it, and open the breaker at ``failures`` in a row or when the probe fails."""
        if self.state == HALF_OPEN:
            self._open()
            return
        if self.state == OPEN:  # sent before it opened, failed after: the cool-down already runs
            return
        self.streak += 1
        if self.streak >= self.failures:
            self._open()

    def abandoned(self) -> None:
        """A request allowed by :meth:`allow` was never answered (cancelled, or not sent): let the next probe go."""
        self._probing = False

    def _open(self) -> None:
        self.state, self.streak, self._probing = OPEN, 0, False
        self._reopen_at = self._clock() + self.cooldown
        self.opened += 1
