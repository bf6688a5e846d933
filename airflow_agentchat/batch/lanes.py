"""The connections of a batch: one lane each, with everything that belongs to that connection.

A batch with ``fallback_conn_ids`` fails over per item (:meth:`BatchRunner._send`), and each connection keeps
what is its own: its hook (its retries, its agent's request and token limit, shared per agent through the limit
backend), the task's rate gate measured against *its* limits, its prices, its metrics tag, its response cache
(the cache key names the endpoint) and its :class:`~airflow_agentchat.batch.breaker.Breaker`. A batch without
fallbacks has one lane and no breaker: every item is tried on its connection as before.

Spend follows the connection that answered: :class:`LaneBudget` reserves each request at the prices of the
lane it goes to and adds each answer's cost at those prices, so ``max_cost`` holds across connections whose
prices differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_agentchat.batch.rate import RateGate
from airflow_agentchat.spend import Budget, Prices

if TYPE_CHECKING:
    from airflow_agentchat.batch.breaker import Breaker
    from airflow_agentchat.hooks.agent_chat import AgentChatHook
    from airflow_agentchat.hooks.limits import LimitSettings
    from airflow_agentchat.metrics import TaskMetrics
    from airflow_agentchat.response_cache import ResponseCache


def task_gate(rpm: float | None, tpm: float | None, limits: LimitSettings, shards: int) -> RateGate:
    """The task's own limits on one connection (this shard's share); a limit that is not lower than the
    connection's own is dropped: the hook enforces that one for every attempt anyway."""
    if rpm and limits.requests_per_minute and rpm >= limits.requests_per_minute:
        rpm = None
    if tpm and limits.tokens_per_minute and tpm >= limits.tokens_per_minute:
        tpm = None
    return RateGate(rpm / shards if rpm else rpm, tpm / shards if tpm else tpm)


@dataclass
class Lane:
    """One connection of a batch and what is its own."""

    conn_id: str
    hook: AgentChatHook
    gate: RateGate
    prices: Prices = field(default_factory=Prices)
    metrics: TaskMetrics | None = None
    cache: ResponseCache | None = None
    breaker: Breaker | None = None  # None: the only connection, every item is tried on it

    @property
    def priced(self) -> Prices | None:
        """The prices when known (a line's ``cost`` is there only then)."""
        return self.prices if self.prices.known else None

    def allow(self) -> bool:
        return self.breaker is None or self.breaker.allow()

    def succeeded(self) -> None:
        if self.breaker is not None:
            if self.breaker.state == "half_open":
                self.hook.log.info("Connection %r answered the probe: breaker closed", self.conn_id)
            self.breaker.succeeded()

    def failed(self) -> None:
        if self.breaker is not None:
            was = self.breaker.state
            self.breaker.failed()
            if self.breaker.state != was and self.breaker.state == "open":
                self.hook.log.warning(
                    "Connection %r: breaker open after %s; items go to the next connection for %.0f s",
                    self.conn_id,
                    "a failed probe" if was == "half_open" else f"{self.breaker.failures} failures in a row",
                    self.breaker.cooldown,
                )

    def abandoned(self) -> None:
        if self.breaker is not None:
            self.breaker.abandoned()


def fallback_lane(
    conn_id: str,
    *,
    timeout: float | None,
    max_retries: int | None,
    max_connections: int,
    shards: int,
    requests_per_minute: float | None,
    tokens_per_minute: float | None,
) -> Lane:
    """A lane for a fallback connection: its own hook (connection read now, outside the event loop) and gate."""
    from airflow_agentchat.hooks.agent_chat import AgentChatHook

    gates: list[RateGate] = []

    async def before_attempt(attempt: int) -> None:  # every attempt takes a slot of this connection's gate
        await gates[0].before_attempt(attempt)

    hook = AgentChatHook(
        conn_id,
        timeout=timeout,
        max_retries=max_retries,
        max_connections=max_connections,
        before_attempt=before_attempt,
        limit_share=shards,
    )
    settings = hook.settings
    gates.append(task_gate(requests_per_minute, tokens_per_minute, settings.limits, shards))
    return Lane(conn_id, hook, gates[0], settings.prices)


@dataclass
class LaneBudget(Budget):
    """A :class:`~airflow_agentchat.spend.Budget` whose cost is each answer priced by the connection that gave it.

    ``spent_cost`` starts with what earlier runs paid (the ``cost`` of their lines). A connection without
    prices adds no cost (``max_cost`` needs prices on every connection: the operator checks that first).
    """

    spent_cost: float = 0.0

    @property
    def used_cost(self) -> float | None:
        return round(self.spent_cost, 6)

    def reserve_at(self, prices: Prices | None, prompt_tokens: int, completion_tokens: int) -> bool:
        """:meth:`reserve` at ``prices`` (one request to one connection)."""
        return self._at(prices, self.reserve, prompt_tokens, completion_tokens)

    def settle_at(
        self, prices: Prices | None, prompt_tokens: int, completion_tokens: int, usage: dict[str, Any] | None
    ) -> None:
        """:meth:`settle` at ``prices``: the answer's cost is added at the prices of the connection that gave it."""
        self._at(prices, self.settle, prompt_tokens, completion_tokens, usage)
        if usage and prices is not None and (cost := prices.cost(usage)) is not None:
            self.spent_cost += cost

    def _at(self, prices: Prices | None, call: Any, *args: Any) -> Any:
        primary = self.prices
        self.prices = prices or Prices()  # reserve/settle estimate cost at self.prices: this lane's, for one call
        try:
            return call(*args)
        finally:
            self.prices = primary


def open_lanes(task: Any, context: Any, schema: Any) -> list[Lane]:
    """The batch task's connections as lanes: the primary on the task's own hook and gate, then each fallback
    (connections read now, so a missing one fails before anything is sent), each with its metrics tag and its
    response cache; breakers only when there is somewhere to fail over to.

    ``task`` is the :class:`~airflow_agentchat.operators.batch.AgentChatBatchOperator` (rendered).
    """
    from airflow_agentchat.batch.breaker import Breaker
    from airflow_agentchat.batch.shards import static_share_warning
    from airflow_agentchat.exceptions import AgentChatError
    from airflow_agentchat.metrics import TaskMetrics
    from airflow_agentchat.response_cache import ResponseCache

    primary, *fallbacks = task.conn_ids()
    lanes = [Lane(primary, task.hook, task.gate, task.hook.settings.prices)]
    for conn_id in fallbacks:
        lane = fallback_lane(
            conn_id,
            timeout=task.timeout,
            max_retries=task.max_retries,
            max_connections=task.max_concurrency,
            shards=task._shards,
            requests_per_minute=task.requests_per_minute,
            tokens_per_minute=task.tokens_per_minute,
        )
        if task.max_cost is not None and not lane.prices.known:
            raise AgentChatError(
                f"max_cost needs prices on every connection: set prompt_token_price and/or completion_token_price "
                f"on fallback connection {conn_id!r} (currency units per million tokens)"
            )
        lanes.append(lane)
    for lane in lanes:
        limits = lane.hook.settings.limits
        if task._shards > 1 and (limits.requests_per_minute or limits.tokens_per_minute) and not limits.backend_conn_id:
            rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
            task.log.warning(static_share_warning(lane.conn_id, rpm, tpm, task._shards))
        lane.metrics = TaskMetrics.create(lane.conn_id, context)
        lane.cache = ResponseCache.for_task(task, lane.hook.settings.base_url, schema)
        if fallbacks:
            lane.breaker = Breaker(task.breaker_failures, task.breaker_cooldown)
    return lanes


def starting_budget(task: Any, lanes: list[Lane], scan: Any) -> LaneBudget:
    """The budget of this run: what earlier runs spent (their lines' tokens and cost; lines without a cost are
    priced at the primary's prices) counts as spent."""
    prices = lanes[0].prices
    spent = scan.cost + (prices.cost(scan.unpriced) or 0.0)
    return LaneBudget(task.max_total_tokens, task.max_cost, prices, used=scan.usage, spent_cost=spent)


def answered_by(connections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Lineage facts naming the connections that answered: ``conn_id`` (the one that answered most) and the
    answers per connection."""
    answers = {conn_id: counts["answers"] for conn_id, counts in connections.items() if counts.get("answers")}
    if not answers:
        return {}
    return {"conn_id": max(answers, key=lambda conn_id: answers[conn_id]), "answers_by_conn": answers}
