"""The connections of a batch as lanes: each one's gate, prices, breaker and the budget priced per lane."""

from __future__ import annotations

import pytest

from airflow_agentchat.batch.breaker import Breaker
from airflow_agentchat.batch.lanes import Lane, LaneBudget, answered_by, fallback_lane, task_gate
from airflow_agentchat.hooks.limits import LimitSettings
from airflow_agentchat.spend import Prices


def test_the_task_gate_keeps_only_limits_lower_than_the_connection_s_and_splits_them_by_shard():
    connection = LimitSettings(requests_per_minute=600, tokens_per_minute=10_000)
    gate = task_gate(300, 20_000, connection, shards=3)
    assert gate.requests_per_minute == 100  # lower than the connection's: this shard's third of it
    assert gate.tokens_per_minute is None  # not lower: the hook enforces the connection's own
    assert task_gate(None, None, LimitSettings(), shards=1).active is False


def test_a_fallback_lane_reads_its_own_connection_limits_and_prices(make_conn):
    conn_id = make_conn(
        "lane_fallback",
        "http://127.0.0.1:9",
        allow_insecure_http=True,
        requests_per_minute=120,
        prompt_token_price=2.0,
        completion_token_price=8.0,
    )
    lane = fallback_lane(
        conn_id,
        timeout=5,
        max_retries=0,
        max_connections=2,
        shards=2,
        requests_per_minute=100,
        tokens_per_minute=None,
    )
    assert lane.conn_id == conn_id and lane.breaker is None
    assert lane.gate.requests_per_minute == 50  # the task's 100 is lower than the connection's 120, halved
    assert lane.prices.known and (lane.prices.prompt, lane.prices.completion) == (2.0, 8.0)
    assert lane.priced is lane.prices


class _Log:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def info(self, message: str, *args: object) -> None:
        self.records.append(("info", message % args))

    def warning(self, message: str, *args: object) -> None:
        self.records.append(("warning", message % args))


class _Hook:
    def __init__(self) -> None:
        self.log = _Log()


def test_a_lane_tells_its_breaker_and_logs_when_it_opens_and_closes():
    now = [0.0]
    lane = Lane("primary", _Hook(), task_gate(None, None, LimitSettings(), 1), breaker=Breaker(2, 30, lambda: now[0]))  # type: ignore[arg-type]
    lane.failed()
    assert lane.allow()
    lane.failed()
    assert not lane.allow()
    assert lane.hook.log.records[-1] == (
        "warning",
        "Connection 'primary': breaker open after 2 failures in a row; items go to the next connection for 30 s",
    )
    now[0] = 31
    assert lane.allow()  # the probe
    lane.succeeded()
    assert lane.hook.log.records[-1] == ("info", "Connection 'primary' answered the probe: breaker closed")
    assert lane.allow()


def test_a_lane_without_a_breaker_always_sends():
    lane = Lane("only", _Hook(), task_gate(None, None, LimitSettings(), 1))  # type: ignore[arg-type]
    for _ in range(10):
        lane.failed()
    assert lane.allow() and lane.priced is None


def test_the_budget_prices_each_answer_at_the_connection_that_gave_it():
    cheap, dear = Prices(prompt=1.0, completion=1.0, known=True), Prices(prompt=10.0, completion=10.0, known=True)
    budget = LaneBudget(None, 0.05, cheap, spent_cost=0.01)
    usage = {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}
    assert budget.reserve_at(dear, 1000, 1000)
    budget.settle_at(dear, 1000, 1000, usage)  # 2,000 tokens at 10 per million
    budget.settle_at(cheap, 0, 0, usage)  # at 1 per million
    assert budget.used_cost == pytest.approx(0.01 + 0.02 + 0.002)
    assert budget.prices is cheap  # the primary's prices are back after each call
    assert not budget.reserve_at(dear, 1000, 1000)  # 0.032 spent + 0.02 would pass 0.05


def test_answered_by_names_the_connection_that_answered_most():
    counts = {"a": {"answers": 2, "errors": 1}, "b": {"answers": 5}, "c": {"answers": 0, "errors": 3}}
    assert answered_by(counts) == {"conn_id": "b", "answers_by_conn": {"a": 2, "b": 5}}
    assert answered_by({"a": {"answers": 0}}) == {}
