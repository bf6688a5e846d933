"""Streaming: the answer is logged line by line as it arrives; XCom gets the folded result and usage.

``stream_options={"include_usage": True}`` asks the server for a final usage chunk, so token counts are known
for streamed answers too.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

with DAG(
    dag_id="example_agentchat_stream",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    tags=["agentchat", "example"],
):
    AgentChatCompletionOperator(
        task_id="stream_story",
        prompt="Tell a four-line story about a pipeline that never failed.",
        stream=True,
        stream_options={"include_usage": True},
    )
