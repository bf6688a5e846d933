"""``@task.agent_chat(cache_path=...)`` under real Airflow; tests/integration/test_operator_cache.py runs it twice."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

CACHE = os.path.join(os.environ.get("AGENTCHAT_EXAMPLE_OUTPUT_DIR", "/tmp"), "operator-response-cache")

with DAG(
    dag_id="agentchat_cache_cases",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
):

    @task.agent_chat(cache_path=CACHE, temperature=0)
    def summarize(topic: str) -> str:
        return f"Summarize the nightly load of {topic} in one line."

    summarize("orders")
    # A miss is sent by the triggerer; the answer is stored when the task resumes, and a hit does not defer.
    AgentChatCompletionOperator(
        task_id="deferred", prompt="Name the load's slowest table.", temperature=0, deferrable=True, cache_path=CACHE
    )
