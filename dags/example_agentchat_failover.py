"""Failover across agents: the same request goes to the next connection when the primary fails for good.

``agentchat_primary`` is tried first (with its own retries); when it cannot answer -- refused, 5xx, still rate
limited after the retries, timed out, its key rejected -- the request goes to ``agentchat_default``. A request
the agent refuses (400) or an answer the content filter stopped does not fail over: another agent would say the
same. XCom ``response`` and ``usage`` name the connection that answered (``conn_id``). See docs/failover.md.

``label_tickets`` does the same per item for a batch: each item that the primary cannot answer goes to the
fallback, and after ``breaker_failures`` failures in a row the primary's breaker opens, so the rest go straight
to the fallback until ``breaker_cooldown`` has passed. Every result line names its ``conn_id``; the summary
counts the answers per connection.

Offline, the dev server can play both: point ``agentchat_primary`` at a port nothing listens on (or at a dev
server started with a wrong ``--api-key``) and ``agentchat_default`` at the dev server.
"""

from __future__ import annotations

import os
import tempfile

import pendulum
from airflow.sdk import DAG

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator
from airflow_agentchat.operators.batch import AgentChatBatchOperator

_OUTPUT = "file://" + os.path.join(
    os.environ.get("AGENTCHAT_EXAMPLE_OUTPUT_DIR") or tempfile.gettempdir(), "agentchat-failover"
)

with DAG(
    dag_id="example_agentchat_failover",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["agentchat", "example"],
):
    AgentChatCompletionOperator(
        task_id="ask",
        agentchat_conn_id="agentchat_primary",
        fallback_conn_ids=["agentchat_default"],
        prompt="Summarise yesterday's failed loads in one line.",
        max_tokens=200,
    )
    AgentChatBatchOperator(
        task_id="label_tickets",
        agentchat_conn_id="agentchat_primary",
        fallback_conn_ids=["agentchat_default"],
        breaker_failures=2,
        breaker_cooldown=60,
        max_concurrency=1,
        prompts=[{"id": f"t{i}", "prompt": f"Ticket {i}: label it in one word."} for i in range(6)],
        output_path=_OUTPUT + "/{{ run_id | replace(':', '_') | replace('+', '_') }}/labels.jsonl",
    )
