"""Token budgets and cost: the batch stops sending at its budget and a rerun continues; cost = usage x price.

Everything runs against the session dev server, and every assertion is on what it counted or on the output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeStateStore, FakeTI

from airflow_agentchat.batch.items import stable_id
from airflow_agentchat.compat import HAS_TASK_STATE_STORE, NO_TASK_STATE_STORE
from airflow_agentchat.spend import Budget, BudgetExhaustedError, Prices

CONN = "agentchat_budget"
PROMPT_PRICE = 2.5  # per million prompt tokens
COMPLETION_PRICE = 10.0


@pytest.fixture()
def server(server):
    """The shared clean dev server, answering after 30 ms."""
    server.configure(latency_ms=30)  # requests overlap, so the stop has requests in flight
    return server


@pytest.fixture()
def conn(server, make_conn) -> str:
    return make_conn(CONN, server.url, prompt_token_price=PROMPT_PRICE, completion_token_price=COMPLETION_PRICE)


def batch(tmp_path: Path, **kwargs):
    from airflow_agentchat.operators.batch import AgentChatBatchOperator

    kwargs.setdefault("output_path", f"file://{tmp_path}/out.jsonl")
    kwargs.setdefault("agentchat_conn_id", CONN)
    return AgentChatBatchOperator(task_id="batch", **kwargs)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def price(usage: dict) -> float:
    return round((usage["prompt_tokens"] * PROMPT_PRICE + usage["completion_tokens"] * COMPLETION_PRICE) / 1e6, 6)


PROMPTS = [f"budget question number {i}" for i in range(60)]


def test_batch_stops_at_its_budget_and_a_rerun_sends_only_the_rest(conn, server, tmp_path):
    out = tmp_path / "out.jsonl"
    ti = FakeTI()
    with pytest.raises(BudgetExhaustedError) as failure:
        batch(tmp_path, prompts=PROMPTS, max_concurrency=6, max_total_tokens=400).execute({"ti": ti})
    first = lines(out)
    sent = server.stats(timestamps=False)["total"]
    # Stopped part way; every request that was sent (in flight at the stop included) has its line.
    assert 0 < sent < len(PROMPTS)
    assert len(first) == sent and all(line["status"] == "ok" for line in first)
    used = sum(line["usage"]["total_tokens"] for line in first)
    message = str(failure.value)
    assert f"{used} of max_total_tokens=400 tokens used" in message
    assert f"{len(PROMPTS) - sent} items not sent" in message
    # Usage and cost reached XCom before the task failed.
    assert ti.xcom["usage"]["total_tokens"] == used
    assert ti.xcom["cost"] == price(ti.xcom["usage"])
    assert ti.xcom["summary"]["not_sent"] == len(PROMPTS) - sent

    assert used <= 400  # reservations are estimates taken before sending, so in flight never overshot here

    summary = batch(tmp_path, prompts=PROMPTS, max_concurrency=6, max_total_tokens=100_000).execute({"ti": FakeTI()})
    stats = server.stats(timestamps=False)
    assert stats["total"] == len(PROMPTS)  # the rerun sent exactly the rest
    assert all(stats["by_prompt"][p] == 1 for p in PROMPTS)
    final = lines(out)
    ids = [line["id"] for line in final]
    assert len(ids) == len(set(ids)) == len(PROMPTS)  # complete, 0 duplicates
    assert set(ids) == {stable_id(p) for p in PROMPTS}
    assert summary["duplicates"] == 0 and summary["budget_exhausted"] is False
    assert summary["usage"]["total_tokens"] == sum(line["usage"]["total_tokens"] for line in final)


def test_a_budget_too_small_for_any_request_says_why(conn, server, tmp_path):
    """max_total_tokens=60 and no max_tokens: every request reserves its prompt plus 64 completion tokens."""
    with pytest.raises(BudgetExhaustedError) as failure:
        batch(tmp_path, prompts=PROMPTS[:12], max_total_tokens=60).execute({"ti": FakeTI()})
    message = str(failure.value)
    assert "0 of max_total_tokens=60 tokens used; 12 items not sent" in message
    assert "64 tokens before the first answer" in message and "Set max_tokens" in message
    assert server.stats(timestamps=False)["total"] == 0


def test_on_budget_exhausted_succeed_returns_the_summary(conn, server, tmp_path):
    summary = batch(
        tmp_path, prompts=PROMPTS[:20], max_concurrency=2, max_total_tokens=150, on_budget_exhausted="succeed"
    ).execute({"ti": FakeTI()})
    sent = server.stats(timestamps=False)["total"]
    assert summary["budget_exhausted"] is True and 0 < sent < 20
    assert summary["not_sent"] == 20 - sent == 20 - summary["total"]


def test_cost_is_usage_times_price_on_lines_summary_and_xcom(conn, server, tmp_path):
    ti = FakeTI()
    summary = batch(tmp_path, prompts=PROMPTS[:10], max_concurrency=3).execute({"ti": ti})
    out = lines(tmp_path / "out.jsonl")
    assert len(out) == 10
    for line in out:
        assert line["cost"] == price(line["usage"]) and line["cost"] > 0
    assert summary["cost"] == price(summary["usage"]) == ti.xcom["cost"]
    assert ti.xcom["usage"] == summary["usage"]


def test_max_cost_stops_like_max_total_tokens(conn, server, tmp_path):
    per_item_cost_bound = 0.003
    with pytest.raises(BudgetExhaustedError, match=r"max_cost=0\.003"):
        batch(tmp_path, prompts=PROMPTS, max_concurrency=2, max_cost=per_item_cost_bound).execute({"ti": FakeTI()})
    out = lines(tmp_path / "out.jsonl")
    sent = server.stats(timestamps=False)["total"]
    assert 0 < sent < len(PROMPTS) and len(out) == sent


def test_max_cost_without_prices_fails_before_any_request(server, make_conn, tmp_path):
    make_conn(CONN, server.url)
    with pytest.raises(Exception, match="max_cost needs prices"):
        batch(tmp_path, prompts=PROMPTS[:3], max_cost=1.0).execute({"ti": FakeTI()})
    assert server.stats(timestamps=False)["total"] == 0


def test_bad_budget_arguments_fail_at_parse_time():
    from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

    with pytest.raises(ValueError, match="max_total_tokens must be a whole number >= 1"):
        AgentChatCompletionOperator(task_id="t", prompt="x", max_total_tokens=0)
    with pytest.raises(ValueError, match="max_cost must be a number > 0"):
        AgentChatCompletionOperator(task_id="t", prompt="x", max_cost=-1)
    with pytest.raises(ValueError, match="on_budget_exhausted must be one of fail, succeed"):
        batch(Path("/tmp"), prompts=["x"], on_budget_exhausted="ignore")


# ---------------------------------------------------------------------------------------- single operator


def single(**kwargs):
    from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

    return AgentChatCompletionOperator(task_id="single", agentchat_conn_id=CONN, deferrable=False, **kwargs)


IMPOSSIBLE = {
    "type": "object",
    "properties": {"never": {"type": "string", "pattern": "^impossible-[0-9]{40}$"}},
    "required": ["never"],
}


@pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason=NO_TASK_STATE_STORE or "")
def test_single_operator_usage_survives_failure_and_the_budget_spans_tries(conn, server):
    """Try 1: every repair round is paid, none validates; usage + cost reach XCom before the failure, and the
    spend stays in the state store. Try 2 with the same budget sends nothing."""
    from airflow_agentchat.structured_output import OutputValidationError

    store = FakeStateStore()
    ti = FakeTI()
    with pytest.raises(OutputValidationError):
        single(prompt="give me json", output_schema=IMPOSSIBLE, output_retries=2, max_total_tokens=100_000).execute(
            {"ti": ti, "task_state_store": store}
        )
    rounds = server.stats(timestamps=False)["total"]
    assert rounds == 3
    usage = ti.xcom["usage"]
    assert usage["total_tokens"] > 0 and ti.xcom["cost"] == price(usage)
    assert store.values["agentchat_spend"] == usage  # what the next try starts from

    budget = usage["total_tokens"] + 5  # too little for another request
    with pytest.raises(BudgetExhaustedError, match=f"{usage['total_tokens']} of max_total_tokens={budget} tokens"):
        single(prompt="give me json", output_schema=IMPOSSIBLE, max_total_tokens=budget).execute(
            {"ti": FakeTI(), "task_state_store": store}
        )
    assert server.stats(timestamps=False)["total"] == rounds  # try 2 sent nothing


def test_single_operator_budget_stops_repair_rounds(conn, server):
    ti = FakeTI()
    with pytest.raises(BudgetExhaustedError):
        single(prompt="give me json", output_schema=IMPOSSIBLE, output_retries=5, max_total_tokens=250).execute(
            {"ti": ti, "task_state_store": FakeStateStore()}
        )
    rounds = server.stats(timestamps=False)["total"]
    assert 1 <= rounds < 6
    assert ti.xcom["usage"]["total_tokens"] > 0  # the paid rounds are in XCom


@pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason=NO_TASK_STATE_STORE or "")
def test_success_forgets_the_spend_of_earlier_tries(conn, server):
    store = FakeStateStore()
    store.set("agentchat_spend", {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20})
    assert single(prompt="hello", max_total_tokens=1000).execute({"ti": FakeTI(), "task_state_store": store})
    assert "agentchat_spend" not in store.values


def test_budget_is_pure_reservation_arithmetic():
    budget = Budget(max_total_tokens=100, prices=Prices(1.0, 2.0, True))
    assert budget.reserve(30, 20) and budget.reserve(30, 20)
    assert not budget.reserve(1, 0) and budget.exhausted  # 100 reserved: nothing more fits
    budget.settle(30, 20, {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40})
    assert budget.used.total_tokens == 40 and budget.reserved_tokens == 50
    assert budget.used_cost == round((30 * 1.0 + 10 * 2.0) / 1e6, 6)


# ------------------------------------------------------------------- the single operator's budget is a bound

SHORT = "a b c d e f g h i j"  # estimated at 9 prompt tokens; the dev server echoes it (about 20 tokens in all)


def test_an_answer_that_takes_the_single_operator_over_its_budget_fails_the_task(conn, server):
    """max_total_tokens=12, a prompt the estimate fits in it (9 tokens), an answer of more: the task fails (it used to
    succeed silently), with usage and cost in XCom first."""
    ti = FakeTI()
    with pytest.raises(BudgetExhaustedError, match=r"of max_total_tokens=12 tokens used.*took the task over"):
        single(prompt=SHORT, max_total_tokens=12).execute({"ti": ti, "task_state_store": FakeStateStore()})
    assert server.stats(timestamps=False)["total"] == 1
    assert ti.xcom["usage"]["total_tokens"] > 12
    assert ti.xcom["cost"] == price(ti.xcom["usage"])


def test_on_budget_exhausted_succeed_ends_the_single_task_successfully(conn, server, capsys):
    ti = FakeTI()
    operator = single(prompt=SHORT, max_total_tokens=12, on_budget_exhausted="succeed")
    assert operator.execute({"ti": ti, "task_state_store": FakeStateStore()}) is None
    assert ti.xcom["usage"]["total_tokens"] > 12 and "cost" in ti.xcom
    assert "on_budget_exhausted='succeed': the task succeeds" in "".join(capsys.readouterr())


def test_a_request_the_estimate_puts_over_the_budget_is_not_sent(conn, server):
    ti = FakeTI()
    with pytest.raises(BudgetExhaustedError, match=r"0 of max_total_tokens=10 tokens used.*so it was not sent"):
        single(prompt="a long question " * 10, max_total_tokens=10).execute({"ti": ti})
    assert server.stats(timestamps=False)["total"] == 0 and "usage" not in ti.xcom
    with pytest.raises(ValueError, match="on_budget_exhausted must be one of fail, succeed"):
        single(prompt="x", on_budget_exhausted="ignore")
