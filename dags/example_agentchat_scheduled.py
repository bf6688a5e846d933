"""A daily prompt, templated with the run's dates and params.

``prompt`` and ``messages`` are templated: Jinja sees ``ds``, ``data_interval_start``, ``params`` and the
rest of the task context; ``messages`` may also be a ``.json``/``.j2`` file next to the DAG.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

with DAG(
    dag_id="example_agentchat_scheduled",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule="@daily",
    catchup=False,
    params={"team": Param("data-platform", type="string"), "max_items": Param(3, type="integer")},
    tags=["agentchat", "example"],
):
    AgentChatCompletionOperator(
        task_id="daily_brief",
        messages="templates/daily_brief.json.j2",
        prompt="Write the stand-up brief for {{ params.team }} for {{ ds }} in at most {{ params.max_items }} items.",
        metadata={"dag": "{{ dag.dag_id }}", "run": "{{ run_id }}"},
        max_completion_tokens=512,
    )
