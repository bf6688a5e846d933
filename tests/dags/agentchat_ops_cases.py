"""A single completion and a batch (file input, upstream-free) for the metrics and lineage tests.

The output folder comes from ``AGENTCHAT_EXAMPLE_OUTPUT_DIR`` (the tests' AIRFLOW_HOME); the input file is
written by the test before the run.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator
from airflow_agentchat.operators.batch import AgentChatBatchOperator

OUT = os.environ.get("AGENTCHAT_EXAMPLE_OUTPUT_DIR", "/tmp")

with DAG(
    dag_id="agentchat_ops_cases",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
):
    single = AgentChatCompletionOperator(task_id="single", prompt="metrics for one request", deferrable=False)
    batch = AgentChatBatchOperator(
        task_id="batch",
        input_path=f"file://{OUT}/ops_cases/input.jsonl",
        output_path=f"file://{OUT}/ops_cases/output.jsonl",
        max_concurrency=4,
        system_prompt="You answer metrics questions. " * 40,  # a shared prefix, cached: cache usage is counted
        cache_prompt="5m",
    )
    single >> batch
