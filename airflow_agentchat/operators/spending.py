"""The single operator's spend across its requests, repair rounds and Airflow tries.

XCom is cleared at every try, so what earlier tries spent is kept in the task's state store
(``context["task_state_store"]``, Airflow 3.3), which survives retries; the key is deleted when the task
succeeds, so clearing a finished task starts a fresh budget. Every request goes through :meth:`TaskSpend.send`:
it checks the budget first, and counts the answer (or the error) for XCom, metrics and lineage after.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow_agentchat.metrics import TaskMetrics, error_kind
from airflow_agentchat.spend import Budget, BudgetExhaustedError, completion_cap, estimate
from airflow_agentchat.usage import ZERO, TokenUsage

STATE_KEY = "agentchat_spend"


class TaskSpend:
    """Budget, prices, metrics and counters of one task try."""

    def __init__(self, operator: Any, context: Mapping[str, Any]) -> None:
        self.log = operator.log
        self.prices = operator.prices()
        self._state = context.get("task_state_store")
        prior = self._load()
        self.budget = Budget(operator.max_total_tokens, operator.max_cost, self.prices, used=TokenUsage.of(prior))
        if self._state is None and self.budget.active:
            from airflow_agentchat.compat import warn_no_task_state_store

            warn_no_task_state_store("The token budget counts this try only", self.log)
        self.metrics = TaskMetrics.create(operator.agentchat_conn_id, context)
        self.usage = ZERO  # this try's, every round
        self.requests = 0
        self.attempts = 0
        self.errors: dict[str, int] = {}
        self.model: str | None = None  # as the last answer names it
        self.pushed = False

    def _load(self) -> Mapping[str, Any] | None:
        if self._state is None:
            return None
        try:
            value = self._state.get(STATE_KEY)
        except Exception as exc:  # the budget still holds within this try
            self.log.warning("Could not read the spend of earlier tries from the task state store: %s", exc)
            return None
        if value:
            self.log.info("Earlier tries of this task used %s tokens", value.get("total_tokens"))
        return value if isinstance(value, Mapping) else None

    def _save(self) -> None:
        if self._state is None or not self.budget.active:
            return
        try:
            self._state.set(STATE_KEY, self.budget.used.as_dict())
        except Exception as exc:
            self.log.warning("Could not save this try's spend to the task state store: %s", exc)

    def check(self, request: Any) -> tuple[int, int]:
        """Reserve a request's estimate, or fail with what was used, the budget and what the request needed."""
        if not self.budget.active:
            return 0, 0
        prompt = estimate(request)
        cap = completion_cap(request) or 0
        if not self.budget.reserve(prompt, cap):
            raise BudgetExhaustedError(
                f"Budget exhausted: {self.budget.describe()} (this task's tries and repair rounds together); the "
                f"next request needs about {prompt + cap} tokens, so it was not sent."
            )
        return prompt, cap

    def send(self, request: Any, send: Callable[[Any], Any]) -> Any:
        """Send through ``send`` within the budget and count the outcome."""
        reservation = self.check(request)
        started = time.perf_counter()
        try:
            completion = send(request)
        except Exception as exc:
            self.failed(exc, started, reservation)
            raise
        self.paid(completion, started, reservation)
        return completion

    def paid(self, completion: Any, started: float | None, reservation: tuple[int, int] = (0, 0)) -> None:
        """Count an answer (also one that arrived through the triggerer)."""
        usage = completion.usage_dict()
        self.usage += TokenUsage.of(usage)
        self.budget.settle(*reservation, usage)
        self._save()
        self.model = getattr(completion, "model", None) or self.model
        meta = completion.meta
        attempts = int(meta.get("attempts") or 1)
        self.requests += 1
        self.attempts += attempts
        if self.metrics is not None:
            latency = meta.get("latency_ms")
            if latency is None and started is not None:
                latency = round((time.perf_counter() - started) * 1000, 1)
            self.metrics.request("ok", attempts, latency, usage)
            self.metrics.flush()

    def failed(self, exc: BaseException, started: float | None, reservation: tuple[int, int] = (0, 0)) -> None:
        self.budget.settle(*reservation, None)
        kind = error_kind(exc)
        attempts = int(getattr(exc, "attempts", 0) or 1)
        self.requests += 1
        self.attempts += attempts
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if self.metrics is not None:
            latency = round((time.perf_counter() - started) * 1000, 1) if started is not None else None
            self.metrics.request(kind, attempts, latency, None)
            self.metrics.flush()

    def invalid_output(self) -> None:
        """An answer that did not match the output schema (counted in lineage; the request itself was ok)."""
        self.errors["invalid_output"] = self.errors.get("invalid_output", 0) + 1

    def push(self, ti: Any, usage: Mapping[str, Any] | None = None) -> None:
        """``usage`` and ``cost`` to XCom: this try's rounds unless ``usage`` is given."""
        pushed = self.usage.as_dict() if usage is None else dict(usage)
        self.pushed = True
        ti.xcom_push(key="usage", value=pushed)
        cost = self.prices.cost(pushed)
        if cost is not None:
            ti.xcom_push(key="cost", value=cost)

    def succeeded(self) -> None:
        """Forget the earlier tries' spend: a cleared, finished task starts with a fresh budget."""
        if self._state is None or not self.budget.active:
            return
        try:
            self._state.delete(STATE_KEY)
        except Exception as exc:
            self.log.warning("Could not clear the spend in the task state store: %s", exc)

    def facts(self, host: str | None, model: str | None) -> dict[str, Any]:
        return {
            "host": host,
            "model": model,
            "usage": self.usage.as_dict(),
            "requests": self.requests,
            "attempts": self.attempts,
            "errors": dict(self.errors),
            "cost": self.prices.cost(self.usage),
        }
