"""Failover across agents: the same request goes to the next connection when the primary fails for good.

``agentchat_primary`` is tried first (with its own retries); when it cannot answer -- refused, 5xx, still rate
limited after the retries, timed out, its key rejected -- the request goes to ``agentchat_default``. A request
the agent refuses (400) or an answer the content filter stopped does not fail over: another agent would say the
same. XCom ``response`` and ``usage`` name the connection that answered (``conn_id``). See docs/failover.md.

Offline, the dev server can play both: point ``agentchat_primary`` at a port nothing listens on (or at a dev
server started with a wrong ``--api-key``) and ``agentchat_default`` at the dev server.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

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
