"""What a completion task does with each answer (operators/answer.py): its usage survives failure, the budget
spans tries and bounds repair rounds, against the session dev server."""

from __future__ import annotations

import pytest
from fakes import FakeStateStore, FakeTI

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


def price(usage: dict) -> float:
    return round((usage["prompt_tokens"] * PROMPT_PRICE + usage["completion_tokens"] * COMPLETION_PRICE) / 1e6, 6)


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
