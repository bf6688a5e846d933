"""Output schemas under real Airflow (``airflow dags test`` against the dev server): every strategy, repair,
templated schemas, the decorator, and exhausted retries failing the task."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cases(run_dag) -> dict:
    return run_dag("agentchat_output_cases", check=False)


@pytest.mark.parametrize("strategy", ["tool", "json", "auto"])
def test_each_strategy_under_airflow_gives_a_valid_value(cases, strategy):
    from dags.agentchat_output_cases import Ticket

    for kind in ("model", "dict"):
        value = cases[(f"{kind}_{strategy}", -1, "return_value")]
        assert Ticket.model_validate(value).model_dump(mode="json") == value
    assert cases[(f"model_{strategy}", -1, "return_value")] == cases[(f"dict_{strategy}", -1, "return_value")]


def test_the_dev_servers_invalid_answer_is_repaired(cases):
    from dags.agentchat_output_cases import Ticket

    for task_id in ("repaired_tool", "repaired_json", "repaired_deferred"):
        Ticket.model_validate(cases[(task_id, -1, "return_value")])
        usage = cases[(task_id, -1, "usage")]
        assert usage["total_tokens"] > cases[(task_id, -1, "response")]["usage"]["total_tokens"]
    assert cases["_log"].count("Answer 1 does not match the output schema") >= 3


def test_a_templated_schema_is_rendered(cases):
    value = cases[("templated_schema", -1, "return_value")]
    assert value["run"].startswith("manual__")


def test_the_decorator_takes_an_output_schema(cases):
    ticket = cases[("decorated", -1, "return_value")]
    assert cases[("use_ticket", -1, "return_value")] == f"{ticket['category']}/{ticket['urgency']}"


def test_exhausted_retries_fail_the_task(cases):
    assert cases["_returncode"] != 0
    assert ("exhausted", -1, "return_value") not in cases
    assert "does not match the output schema after 2 round(s)" in cases["_log"]
    assert cases[("exhausted", -1, "usage")]["total_tokens"] > 0  # what was paid for is still reported
