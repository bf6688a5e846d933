"""Cases where the docs and the code once disagreed (issue 20): a ``-> dict`` decorated function, a streamed task."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

with DAG(
    dag_id="agentchat_docs_cases",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
):

    @task.agent_chat
    def as_dict() -> dict:
        """Returns a request body: the annotation must not turn on multiple_outputs."""
        return {"messages": [{"role": "user", "content": "a dict request"}], "temperature": 0}

    as_dict()
    AgentChatCompletionOperator(task_id="streamed", prompt="a streamed answer", stream=True, deferrable=False)
