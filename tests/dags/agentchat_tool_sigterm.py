"""A long tool round (one answer, many slow calls) for integration/test_tool_sigterm.py, which stops it with SIGTERM."""

from __future__ import annotations

import os
import time

import pendulum
from airflow.sdk import DAG

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator


def slow_step(step: str) -> str:
    """One step of a long job: logs the step to the file the test reads, then takes a while."""
    with open(os.environ["AGENTCHAT_TOOL_LOG"], "a") as log:
        log.write(step + "\n")
    time.sleep(0.5)
    return f"did {step}"


with DAG(
    dag_id="agentchat_tool_sigterm",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
):
    AgentChatCompletionOperator(task_id="long_round", prompt="run the job", tools=[slow_step], max_retries=0)
