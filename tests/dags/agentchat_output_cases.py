"""Output schemas under real Airflow against the dev server; integration/test_structured_output.py runs it once."""

from __future__ import annotations

import datetime
from typing import Literal

import pendulum
from airflow.sdk import DAG, task
from pydantic import BaseModel, Field

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator


class Ticket(BaseModel):
    """One triaged support ticket."""

    category: Literal["billing", "login", "outage", "other"]
    urgency: Literal["low", "medium", "high"]
    summary: str = Field(max_length=120)
    due: datetime.date


TICKET_SCHEMA = Ticket.model_json_schema()
PROMPT = "Triage: the invoice page shows the wrong VAT for EU customers."

with DAG(
    dag_id="agentchat_output_cases",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
):
    for strategy in ("tool", "json", "auto"):
        AgentChatCompletionOperator(
            task_id=f"model_{strategy}", prompt=PROMPT, output_schema=Ticket, output_strategy=strategy
        )
        AgentChatCompletionOperator(
            task_id=f"dict_{strategy}", prompt=PROMPT, output_schema=TICKET_SCHEMA, output_strategy=strategy
        )
    AgentChatCompletionOperator(
        task_id="repaired_tool",
        prompt=f"{PROMPT} [[fault:invalid_output]]",
        output_schema=Ticket,
        output_strategy="tool",
    )
    AgentChatCompletionOperator(
        task_id="repaired_json",
        prompt=f"{PROMPT} [[fault:invalid_output]]",
        output_schema=Ticket,
        output_strategy="json",
    )
    AgentChatCompletionOperator(
        task_id="repaired_deferred",
        prompt=f"{PROMPT} [[fault:invalid_output]]",
        output_schema=TICKET_SCHEMA,
        deferrable=True,
    )
    AgentChatCompletionOperator(
        task_id="templated_schema",
        prompt=PROMPT,
        output_schema='{"type": "object", "properties": {"run": {"type": "string", "const": "{{ run_id }}"}}}',
        output_strategy="json",
    )
    AgentChatCompletionOperator(
        task_id="exhausted",
        prompt=f"{PROMPT} [[fault:invalid_output:times=5]]",
        output_schema=Ticket,
        output_retries=1,
    )

    @task.agent_chat(output_schema=Ticket, system_prompt="You triage support tickets.")
    def decorated(text: str) -> str:
        return f"Triage: {text}"

    @task
    def use_ticket(ticket: dict) -> str:
        return f"{ticket['category']}/{ticket['urgency']}"

    use_ticket(decorated("login fails with a 500 after the password reset"))
