"""Upstream data that looks like a template (and ends in ".json") must reach the agent as literal text.

integration/test_template_injection.py runs this DAG against a scripted server and checks what the server received.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

#: What a hostile row, tool result or prompt-injected agent would send: Jinja that reads the connection's key.
HOSTILE = "{{ conn.agentchat_default.password }} notes.json"

with DAG(
    dag_id="agentchat_template_injection",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    params={"team": "ops"},
):

    @task
    def rows() -> list[str]:
        return [HOSTILE]

    # The reproducer: mapped values are data, never templates.
    AgentChatCompletionOperator.partial(task_id="mapped_prompt").expand(prompt=rows())

    @task.agent_chat
    def decorated(text: str) -> str:
        return f"Row: {text}"

    decorated.expand(text=rows())

    # An agent's own answers (n=2 gives a list) mapped into the next prompt.
    agent = AgentChatCompletionOperator(task_id="agent", prompt="INJECT", n=2)
    AgentChatCompletionOperator.partial(task_id="answer_mapped").expand(prompt=agent.output)

    # What the DAG author wrote is still a template, and a file in the search path is still a file.
    AgentChatCompletionOperator.partial(
        task_id="file_still_renders", messages="case_templates/messages.json.j2"
    ).expand(prompt=["and one more"])
    AgentChatCompletionOperator(task_id="author_text", prompt="Describe orders.json for {{ params.team }}")
