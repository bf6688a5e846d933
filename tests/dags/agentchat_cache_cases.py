"""``@task.agent_chat(cache_path=...)`` under real Airflow; tests/test_operator_cache.py runs it twice."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

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
