"""The batch task's own rate limits: requests paced on a fixed timeline, and a token budget corrected by usage.

The agent's limits belong to its connection and the hook enforces them for every request, its tokens included
(:mod:`airflow_agentchat.hooks.limits`); the operator's ``requests_per_minute`` / ``tokens_per_minute`` can only
lower them for one task, and only that lower limit is kept here (so no token is counted twice).

``requests_per_minute``: requests are *paced* one every ``60 / (rpm * PACE)`` seconds (no bursts), so no
window ever holds more than the limit, retries included: the hook awaits :meth:`RateGate.before_attempt`
before every attempt. The pacing is the hook's :class:`~airflow_agentchat.hooks.limits.Pacer`.
``tokens_per_minute``: each item acquires an estimate (prompt size + running mean of
completion tokens) from a bucket holding ten seconds of budget; after the answer it is corrected by the real
usage, so the long-run rate follows the true usage (a budget's reserve/settle is about money, not rate).
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow_agentchat.hooks.limits import PACE, Pacer
from airflow_agentchat.spend import DEFAULT_COMPLETION_TOKENS

__all__ = ["PACE", "RateGate"]


class RateGate:
    """Request pacing and token budget shared by every request of a batch (retries included)."""

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None) -> None:
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        if tokens_per_minute is not None and tokens_per_minute <= 0:
            raise ValueError("tokens_per_minute must be positive")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        # Pacing, not bursts, so every sliding window stays within the limit. The server counts arrivals, not
        # sends: pacing at PACE of the limit leaves room for the jitter on the way (several shards' worth of it
        # when a mapped task shares one agent).
        self._pacer = Pacer(requests_per_minute) if requests_per_minute else None
        self._tokens: Any = None
        self._mean_completion = float(DEFAULT_COMPLETION_TOKENS)
        self._answers = 0
        if tokens_per_minute:
            from aiolimiter import AsyncLimiter

            self._tokens = AsyncLimiter(tokens_per_minute / 6.0, 10.0)

    @property
    def active(self) -> bool:
        return self._pacer is not None or self._tokens is not None

    def estimate(self, prompt_tokens: int, max_completion: int | None = None) -> int:
        """Tokens to reserve: the prompt plus the running mean of completions (capped by the request's max)."""
        completion = self._mean_completion if max_completion is None else min(self._mean_completion, max_completion)
        return int(prompt_tokens + completion + 0.999)

    async def acquire(self, estimate: int) -> None:
        """Wait for ``estimate`` tokens of budget (once per item, before its first attempt)."""
        if self._tokens is not None:
            await self._tokens.acquire(min(float(estimate), self._tokens.max_rate))

    async def correct(self, estimate: int, usage: dict[str, Any]) -> None:
        """Charge the difference between the estimate and the real usage (refunds are not possible)."""
        completion = usage.get("completion_tokens")
        if isinstance(completion, int):
            self._answers += 1
            self._mean_completion += (completion - self._mean_completion) / min(self._answers, 100)
        if self._tokens is None:
            return
        total = usage.get("total_tokens")
        if isinstance(total, int) and total > estimate:
            await self._tokens.acquire(min(float(total - estimate), self._tokens.max_rate))

    async def before_attempt(self, attempt: int) -> None:
        """The hook's ``before_attempt``: every attempt, the first and each retry, takes a request slot.

        The hook calls it once the shared pause is over, so time spent paused or backing off takes none.
        """
        # Booked back to back (see Pacer): a bucket of one, as ``aiolimiter`` has, loses the time the event
        # loop wakes a waiter late (~6% of the limit on a busy 2-core worker).
        if self._pacer is not None and (delay := self._pacer.book()) > 0:
            await asyncio.sleep(delay)
