"""The batch forecast (airflow_agentchat/batch/forecast.py): the bill before the first request.

``check`` and ``only`` are judged by what the dev server counted: nothing at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeTI

from airflow_agentchat.spend import BudgetExhaustedError, estimate

CONN = "agentchat_forecast"


@pytest.fixture()
def conn(server, make_conn) -> str:
    return make_conn(CONN, server.url, prompt_token_price=1.0, completion_token_price=2.0)


def run(tmp_path: Path, prompts, out: str = "out", ti: FakeTI | None = None, **kwargs) -> dict:
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    op = AgentChatBatchOperator(
        task_id="batch",
        agentchat_conn_id=CONN,
        prompts=prompts,
        output_path=f"file://{tmp_path}/{out}.jsonl",
        progress_interval=60,
        temperature=0,
        **kwargs,
    )
    return op.execute({"ti": ti or FakeTI()})


def sent(server) -> int:
    return server.stats(timestamps=False)["total"]


def test_check_refuses_an_over_budget_batch_before_any_request(conn, server, tmp_path):
    prompts = [f"a question of some length, number {i}" for i in range(50)]
    ti = FakeTI()
    with pytest.raises(BudgetExhaustedError) as caught:
        run(tmp_path, prompts, ti=ti, forecast="check", max_total_tokens=500, max_tokens=20)
    assert sent(server) == 0
    message = str(caught.value)
    forecast = ti.xcom["forecast"]
    assert forecast["items"] == 50 and forecast["completion_tokens"] == 50 * 20
    assert f"{forecast['total_tokens']} tokens" in message and "max_total_tokens=500" in message
    assert "nothing was sent" in message
    assert not (tmp_path / "out.jsonl").exists()


def test_check_refuses_over_max_cost_and_lets_a_fitting_batch_run(conn, server, tmp_path):
    prompts = [f"q{i}" for i in range(10)]
    with pytest.raises(BudgetExhaustedError, match="max_cost=1e-05"):
        run(tmp_path, prompts, forecast="check", max_cost=0.00001, max_tokens=50)
    assert sent(server) == 0
    summary = run(tmp_path, prompts, forecast="check", max_total_tokens=100_000, max_tokens=50)
    assert sent(server) == 10
    assert summary["forecast"]["items"] == 10 and summary["forecast"]["actual"]["items"] == 10
    assert summary["forecast"]["actual"]["total_tokens"] == summary["run_usage"]["total_tokens"]
    assert summary["forecast"]["actual"]["cost"] == summary["run_cost"]


def test_only_sends_nothing_and_pushes_the_forecast(conn, server, tmp_path):
    prompts = [f"q{i}" for i in range(7)]
    ti = FakeTI()
    summary = run(tmp_path, prompts, ti=ti, forecast="only")
    assert sent(server) == 0 and summary["sent"] == 0
    forecast = ti.xcom["forecast"]
    assert forecast == summary["forecast"]
    assert forecast["items"] == 7 and forecast["completion_source"] == "default"
    assert forecast["completion_tokens"] == 7 * 64
    assert forecast["cost"] == pytest.approx((forecast["prompt_tokens"] * 1 + forecast["completion_tokens"] * 2) / 1e6)
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.parts").exists()


def test_the_forecast_counts_only_what_resume_and_the_cache_leave(conn, server, tmp_path):
    cache = f"file://{tmp_path}/cache"
    run(tmp_path, [f"q{i}" for i in range(6)], out="first", cache_path=cache)
    first_completion = json.loads((tmp_path / "first.jsonl").read_text().splitlines()[0])["usage"]
    prompts = [f"q{i}" for i in range(10)]
    run(tmp_path, prompts[8:], out="second")  # 2 items already in this output: resumed
    server.reset()
    ti = FakeTI()
    run(tmp_path, prompts, out="second", ti=ti, forecast="only", cache_path=cache)
    forecast = ti.xcom["forecast"]
    assert sent(server) == 0
    assert forecast["items"] == 2 and forecast["cached"] == 6  # q6, q7 to send; q8, q9 resumed
    assert forecast["completion_source"] == "cache" and forecast["mean_completion"] > 0
    assert forecast["prompt_tokens"] == 2 * estimate([{"role": "user", "content": "q6"}])
    assert first_completion["completion_tokens"] > 0


def test_the_previous_runs_mean_completion_is_used_without_a_cache(conn, server, tmp_path):
    run(tmp_path, ["one", "two"])
    usage = [json.loads(line)["usage"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    ti = FakeTI()
    run(tmp_path, ["one", "two", "three"], ti=ti, forecast="only")
    forecast = ti.xcom["forecast"]
    assert forecast["completion_source"] == "previous_run"
    assert forecast["mean_completion"] == pytest.approx(sum(u["completion_tokens"] for u in usage) / 2, abs=0.1)
    assert forecast["already_used"] == sum(u["total_tokens"] for u in usage)


def test_log_logs_and_runs(conn, server, tmp_path, caplog):
    summary = run(tmp_path, ["x", "y"], forecast="log", max_tokens=10)
    assert sent(server) == 2 and summary["forecast"]["completion_tokens"] == 20


def test_a_bad_forecast_value_is_refused_when_the_dag_is_parsed():
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    with pytest.raises(ValueError, match="forecast must be None or one of log, check, only"):
        AgentChatBatchOperator(task_id="t", prompts=["x"], output_path="/tmp/o.jsonl", forecast="dry")
