"""A batch run's summary (batch/summary.py): what is over the whole output, what is this run's, and the parts that
appear only with prices, a forecast or a budget."""

from __future__ import annotations

from types import SimpleNamespace

from airflow_agentchat.batch.summary import run_summary
from airflow_agentchat.spend import Prices
from airflow_agentchat.usage import TokenUsage

WHOLE = TokenUsage(2_000_000, 1_000_000, 3_000_000)
THIS_RUN = TokenUsage(1_000_000, 0, 1_000_000)


def summary(**kwargs):
    composed = SimpleNamespace(total=10, succeeded=7, failed=3, error_types={"invalid_output": 2, "server_error": 1})
    composed.usage, composed.connections, composed.cost = WHOLE, {"agentchat_default": {"answers": 7}}, 9.5
    run = SimpleNamespace(sent=4, requests=5, repairs=1, attempts=6, usage=THIS_RUN, cached=2, done=4, elapsed=2.0)
    run.failovers, run.cost = 1, 2.25
    run.cached_tokens = SimpleNamespace(total=lambda: TokenUsage(0, 0, 0))
    input_stats = SimpleNamespace(resumed=3, duplicates=1, rejected=0)
    arguments = {"prices": Prices(), "budget": SimpleNamespace(active=False), "forecast": None, "rate_share": {}}
    return run_summary("file:///out.jsonl", composed, run, input_stats, 2.5, 12, **{**arguments, **kwargs})


def test_the_output_counts_are_over_the_whole_output_and_the_run_counts_this_runs():
    s = summary()
    assert (s["total"], s["succeeded"], s["failed"], s["failed_fraction"]) == (10, 7, 3, 0.3)
    assert s["invalid_output"] == 2 and s["usage"]["total_tokens"] == 3_000_000
    assert (s["sent"], s["requests"], s["repairs"], s["run_usage"]["total_tokens"]) == (4, 5, 1, 1_000_000)
    assert (s["resumed"], s["duplicates"], s["items_per_s"]) == (3, 1, 2.0)
    assert s["connections"] == {"agentchat_default": {"answers": 7}} and s["failovers"] == 1
    assert "cost" not in s and "forecast" not in s and "budget_exhausted" not in s


def test_prices_add_the_cost_of_the_output_and_of_the_run():
    s = summary(prices=Prices(prompt=1.0, completion=2.0, known=True))
    assert (s["cost"], s["run_cost"]) == (4.0, 1.0)


def test_with_failover_each_line_was_priced_by_its_connection():
    s = summary(failover=True, prices=Prices(prompt=1.0, completion=2.0, known=True))
    assert (s["cost"], s["run_cost"]) == (9.5, 2.25)  # the sums of the lines' own costs, not usage x one price


def test_an_exhausted_budget_says_how_many_items_were_not_sent():
    s = summary(budget=SimpleNamespace(active=True, exhausted=True))
    assert s["budget_exhausted"] is True and s["not_sent"] == 12 - 3 - 1 - 4


def test_a_forecast_is_set_beside_what_the_run_actually_sent():
    forecast = SimpleNamespace(as_dict=lambda: {"items": 5, "total_tokens": 900})
    s = summary(forecast=forecast, prices=Prices(prompt=1.0, known=True))
    assert s["forecast"] == {
        "items": 5,
        "total_tokens": 900,
        "actual": {"items": 4, "cached": 2, "total_tokens": 1_000_000, "cost": 1.0},
    }
