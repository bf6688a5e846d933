"""The agent picks a branch, under real Airflow against the dev server; integration/test_branch.py runs it once."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_agentchat.operators.branch import AgentChatBranchOperator

BRANCHES = {
    "refund": "the customer was charged wrongly",
    "escalate": "the service is down for many users",
    "reply": "a how-to question",
}

with DAG(
    dag_id="agentchat_branch_cases",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
):

    @task
    def leaf(name: str) -> str:
        return name

    # One choice, repaired once ([[fault:invalid_output]] makes the first answer name no branch).
    pick = AgentChatBranchOperator(
        task_id="pick", prompt="Ticket: I was charged twice [[fault:invalid_output]]", branches=BRANCHES
    )
    after = task(trigger_rule="none_failed_min_one_success")(lambda: "joined").override(task_id="join")()
    for name in BRANCHES:
        pick >> leaf.override(task_id=name)(name) >> after

    # Several choices, JSON strategy.
    multi = AgentChatBranchOperator(
        task_id="multi",
        prompt="Ticket: the API is down and I was charged for it",
        branches={f"m_{k}": v for k, v in BRANCHES.items()},
        allow_multiple=True,
        output_strategy="json",
    )
    for name in BRANCHES:
        multi >> leaf.override(task_id=f"m_{name}")(name)

    # The decorator form.
    @task.agent_chat_branch(branches={f"d_{k}": v for k, v in BRANCHES.items()})
    def decorated_pick(ticket: str) -> str:
        return f"Ticket: {ticket}"

    chosen = decorated_pick("How do I export my invoices?")
    for name in BRANCHES:
        chosen >> leaf.override(task_id=f"d_{name}")(name)
