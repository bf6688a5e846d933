"""One completion whose answer feeds a downstream task.

Runs offline against the dev server (``make demo``) or against a real agent: point the ``agentchat_default``
connection at the agent's endpoint and access key.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

with DAG(
    dag_id="example_agentchat_basic",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["agentchat", "example"],
):
    ask = AgentChatCompletionOperator(
        task_id="ask",
        system_prompt="You are a concise data assistant.",
        prompt="Name three checks worth running on a daily sales table.",
        temperature=0.2,
        max_tokens=200,
    )

    @task
    def use_answer(answer: str) -> dict:
        """A data task that takes the agent's answer from XCom like any other value."""
        words = answer.split()
        return {"answer": answer, "words": len(words)}

    use_answer(ask.output)
