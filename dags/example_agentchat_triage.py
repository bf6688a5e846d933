"""Ticket triage with typed results: rows -> batch with an output schema -> aggregate -> branch on urgency.

::

    load_tickets -> triage (AgentChatBatchOperator, output_schema=Triage) -> aggregate -> route
                                                                                      ├── page_on_call
                                                                                      ├── notify_team
                                                                                      └── daily_digest

Every result line of ``triage`` carries ``"output"``: a dict valid for :class:`Triage` (category, urgency,
one-line summary), so ``aggregate`` works with fields, not free text. Answers the agent could not fit to the
schema are sent back with the errors (``output_retries`` repair rounds, 2 by default); what is still invalid
after them becomes an ``invalid_output`` error line, counted in the summary (``max_failed_fraction`` decides
whether the task fails). Against the dev server, ``params.fault_rows`` rows carry its
``[[fault:invalid_output:times=9]]`` marker (invalid on every round) so the demo shows such rows; set it to 0
for a real agent.
"""

from __future__ import annotations

import os
import tempfile
from typing import Literal

import pendulum
from airflow.sdk import DAG, Param, task
from pydantic import BaseModel, Field

from airflow_agentchat.operators.batch import AgentChatBatchOperator

_DEFAULT_BASE = "file://" + os.path.join(
    os.environ.get("AGENTCHAT_EXAMPLE_OUTPUT_DIR") or tempfile.gettempdir(), "agentchat-triage"
)
URGENCY = ("low", "medium", "high", "critical")


class Triage(BaseModel):
    """The triage of one support ticket."""

    category: Literal["billing", "login", "outage", "bug", "question"]
    urgency: Literal["low", "medium", "high", "critical"]
    summary: str = Field(max_length=120, description="One line, at most 120 characters.")


with DAG(
    dag_id="example_agentchat_triage",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule="@daily",
    catchup=False,
    params={
        "base_path": Param(_DEFAULT_BASE, type="string", description="where the results go"),
        "fault_rows": Param(1, type="integer", minimum=0, description="rows with the dev server's invalid marker"),
    },
    tags=["agentchat", "example", "output-schema"],
):

    @task
    def load_tickets(params: dict) -> list[dict]:
        """The day's tickets (a real DAG reads them from the help desk's API or a table)."""
        texts = [
            "I was charged twice for the March invoice.",
            "Nobody on our team can log in since 9:00, SSO says 'invalid audience'.",
            "The export to CSV drops the last column.",
            "Is there a way to add a second admin?",
            "Dashboard has been returning 502 for all users for 20 minutes.",
            "Password reset mail never arrives.",
            "Our card was declined but the bank says it is fine.",
            "The API returns dates in the wrong time zone.",
        ]
        marker = " [[fault:invalid_output:times=9]]"  # invalid on every round, repairs included
        return [
            {
                "id": f"ticket-{n}",
                "prompt": f"Ticket {n}: {text}" + (marker if n < params["fault_rows"] else ""),
                "context": {"ticket": n},
            }
            for n, text in enumerate(texts)
        ]

    triage = AgentChatBatchOperator(
        task_id="triage",
        prompts=load_tickets(),
        output_path="{{ params.base_path }}/{{ run_id | replace(':', '_') | replace('+', '_') }}/triage.jsonl",
        system_prompt="You triage support tickets: category, urgency and a one-line summary.",
        output_schema=Triage,
        temperature=0,
        max_concurrency=8,
        max_failed_fraction=0.25,
        include_response=False,
    )

    @task
    def aggregate(summary: dict) -> dict:
        """Count the validated outputs by category and urgency; keep the worst urgency for routing."""
        import json

        from airflow.sdk import ObjectStoragePath

        by_category: dict[str, int] = {}
        by_urgency: dict[str, int] = {}
        headlines = []
        with ObjectStoragePath(summary["output_path"]).open("rb") as handle:
            for raw in handle.readlines():  # Airflow 3.0 cannot iterate the handle itself
                line = json.loads(raw)
                if line["status"] != "ok":
                    continue
                ticket = line["output"]
                by_category[ticket["category"]] = by_category.get(ticket["category"], 0) + 1
                by_urgency[ticket["urgency"]] = by_urgency.get(ticket["urgency"], 0) + 1
                headlines.append(f"[{ticket['urgency']}] {ticket['summary']}")
        worst = max(by_urgency, key=URGENCY.index) if by_urgency else "low"
        return {
            "triaged": sum(by_category.values()),
            "invalid_output": summary["invalid_output"],
            "by_category": dict(sorted(by_category.items())),
            "by_urgency": dict(sorted(by_urgency.items(), key=lambda kv: URGENCY.index(kv[0]))),
            "worst_urgency": worst,
            "headlines": sorted(headlines),
        }

    @task.branch
    def route(report: dict) -> str:
        """Page someone only when it is warranted."""
        return {"critical": "page_on_call", "high": "page_on_call", "medium": "notify_team"}.get(
            report["worst_urgency"], "daily_digest"
        )

    @task
    def page_on_call(report: dict) -> str:
        return f"paging on-call: {report['by_urgency']}"

    @task
    def notify_team(report: dict) -> str:
        return f"team notified: {report['by_urgency']}"

    @task
    def daily_digest(report: dict) -> str:
        return f"digest: {report['triaged']} tickets"

    report = aggregate(triage.output)
    route(report) >> [page_on_call(report), notify_team(report), daily_digest(report)]
