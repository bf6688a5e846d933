"""Python tools and human review under a real scheduler; tests/integration/test_approval.py runs it on its own stack.

Every task talks to ``agentchat_scripted`` (the test's scripted server) and answers according to its prompt.
``tool_retry`` counts its tool's calls in a file (``AGENTCHAT_TEST_DIR``), so a tool run twice shows even
though each try runs in a process of its own.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task
from pydantic import BaseModel, Field

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

CONN = "agentchat_scripted"


def record_step(step: str) -> dict:
    """Record one step of the job (a side effect that must not happen twice).

    :param step: the name of the step.
    """
    counter = Path(os.environ["AGENTCHAT_TEST_DIR"]) / "record_step.calls"
    with counter.open("a") as out:
        out.write(f"{step} pid={os.getpid()}\n")
    return {"recorded": step}


class Reply(BaseModel):
    """A reply to a customer."""

    message: str = Field(min_length=1)
    refund_usd: float = Field(ge=0)


with DAG(
    dag_id="agentchat_review_cases",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["agentchat", "test"],
):
    AgentChatCompletionOperator(
        task_id="tool_retry",
        agentchat_conn_id=CONN,
        prompt="[tool_retry] record two steps",
        tools=[record_step],
        max_retries=0,  # the hook does not retry: the scripted 500 fails the try, Airflow retries the task
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

    @task.agent_chat(agentchat_conn_id=CONN, require_approval=True)
    def approve_text() -> str:
        return "[approve_text] draft a reply"

    approve_text()

    for task_id in ("edit_structured", "edit_invalid"):
        AgentChatCompletionOperator(
            task_id=task_id,
            agentchat_conn_id=CONN,
            prompt=f"[{task_id}] reply to the customer",
            output_schema=Reply,
            output_strategy="json",
            require_approval=True,
            retries=0,
        )

    AgentChatCompletionOperator(
        task_id="reject",
        agentchat_conn_id=CONN,
        prompt="[reject] draft a reply",
        require_approval=True,
        retries=0,
    )

    AgentChatCompletionOperator(
        task_id="timeout_default",
        agentchat_conn_id=CONN,
        prompt="[timeout_default] draft a reply",
        require_approval=True,
        # Long enough for the scheduler to handle the parking process's exit first (see test_approval.py).
        approval_timeout=timedelta(seconds=20),
        approval_default="approve",
    )
